"""What the launcher's client and the launcher process share: message limits, start-up variables, a group's kill."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping

MESSAGE_LIMIT = 1 << 18  # bytes of one request (argv, cwd, environment); larger ones run fresh
PING = b'{"ping": 1}'  # the client's "are you there?"; the launcher answers {"pong": 1}

# Read once when an interpreter (or a library the launcher preloads) starts; a forked child cannot
# change them, so a launcher only serves modules that agree with it on these.
_STARTUP_PREFIXES = ("PYTHON", "LD_", "OMP_", "OPENBLAS_", "MKL_", "GOTO_")
_STARTUP_NAMES = frozenset({"LANG", "LC_ALL", "LC_CTYPE"})


def is_startup_variable(name: str) -> bool:
    """Whether `name` is read by the interpreter (or a preloaded library) only when it starts."""
    return name in _STARTUP_NAMES or name.startswith(_STARTUP_PREFIXES)


def startup_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of `env` that are read only at start-up."""
    return {name: value for name, value in env.items() if is_startup_variable(name)}


def kill_group(pgid: int) -> None:
    """SIGKILL a module's process group, if anything is left in it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait_or_kill(proc: subprocess.Popen, timeout: float) -> int:
    """The launcher's exit status, once it has exited within `timeout` or been killed."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def describe(returncode: int) -> str:
    """How a launcher ended, as a reason: "killed by signal 9", "exit status 1"."""
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"
