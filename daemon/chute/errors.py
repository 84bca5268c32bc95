"""The one exception hierarchy of chute, and the exit codes the CLI maps it to."""

from __future__ import annotations

import errno
import resource
from dataclasses import dataclass

# Exit codes of the `chute` command (contract §7).
RET_OK = 0
RET_FAILED = 1  # invalid definitions, a failed run, an unknown run id
RET_USAGE = 2  # bad command line (argparse uses 2 as well)
RET_RUNNING = 3  # another daemon already holds the pidfile
RET_INTERRUPTED = 130  # stopped by Ctrl-C

# Errors that say the process or the host is short of descriptors or memory, never that anything is
# wrong with a file or a folder (open(2), opendir(3), accept(2)): logged as `daemon.resources` (issue #19).
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


def short_of_resources(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS


def resources_fields(exc: OSError) -> dict[str, object]:
    """The key/values of a `daemon.resources` event: which errno, and the descriptor limit in force."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "errno": errno.errorcode.get(exc.errno or 0, str(exc.errno)),
        "reason": exc.strerror or str(exc),
        "fd_limit": soft,
    }


@dataclass(frozen=True)
class Problem:
    """One thing wrong in one definition file, pointing at its line and field."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ChuteError(Exception):
    """Anything chute reports to a user as one line and an exit code."""

    exit_code = RET_FAILED


class DefinitionError(ChuteError):
    """A config, module manifest or job definition is invalid; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(ChuteError):
    """The command line asks for something that does not exist or cannot be done."""

    exit_code = RET_USAGE


class ClaimLost(ChuteError):
    """Another daemon took over this claim; the work must be discarded, not published."""


class AlreadyRunning(ChuteError):
    """The pidfile is held by a live daemon."""

    exit_code = RET_RUNNING


class WorkerLost(ChuteError):
    """The worker running a run died under it (killed, out of memory, a bug that took the process down)."""
