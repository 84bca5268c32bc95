"""`python -m chute.launcher SOCKET_FD PARENT_PID PRELOAD...`: the launcher process, and each module forked from it."""

import sys

from chute.launcher.child import ModuleRun, run_as_main
from chute.launcher.server import main

if __name__ == "__main__":
    _outcome = main(sys.argv[1:])
    if not isinstance(_outcome, ModuleRun):
        sys.exit(_outcome)
    # A forked child, out of the serve loop: the module runs at the top level, and then the
    # interpreter ends as after any script (joins its threads, runs atexit, exits with its status).
    run_as_main(_outcome)
