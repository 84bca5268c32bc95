"""The Linux process calls chute makes beyond the os module: prctl(2), pidfds, and reading /proc (proc(5)).

One error policy for every function here: a call that fails raises OSError with its errno, as the
os module's own calls do (prctl's failures too); asked about a process that is gone (no /proc/PID),
it raises ProcessLookupError. Nothing returns a flag for a failure: a caller that can do without
the call catches OSError where it calls, and says why. The walks over many processes (`pids`,
`children`, `carrying`) skip a process that ends, or that /proc hides, while they look: that is what
the walk found, not its failure. libc is loaded on the first prctl or fflush, not at import.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

_PR_SET_PDEATHSIG = 1  # prctl(2)
_PR_SET_CHILD_SUBREAPER = 36


@functools.cache
def _libc() -> Any:
    import ctypes  # here: only the processes that make these calls load libc through ctypes

    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    import ctypes

    if _libc().prctl(option, value, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl({option}): {os.strerror(error)}")


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Have the kernel send `signum` to this process when the thread that forked it ends (PR_SET_PDEATHSIG)."""
    _prctl(_PR_SET_PDEATHSIG, signum)


def become_subreaper() -> None:
    """Make this process the parent of its descendants' orphans, instead of init (PR_SET_CHILD_SUBREAPER)."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def flush_c_streams(hold_gil: bool = False) -> None:
    """fflush(NULL): every C stdio stream of this process; `hold_gil` keeps other Python threads stopped meanwhile."""
    if hold_gil:
        import ctypes

        ctypes.PyDLL(None).fflush(None)  # PyDLL: the call holds the GIL
    else:
        _libc().fflush(None)


def pidfd(pid: int) -> int:
    """A pidfd for `pid` (pidfd_open(2)): readable once the process has exited."""
    return os.pidfd_open(pid)


def read(pid: int | str, name: str) -> bytes:
    """/proc/PID/NAME (PID may be "self"); ProcessLookupError when the process is gone."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ProcessLookupError(f"no process {pid} (/proc/{pid}/{name})") from None


def stat_fields(pid: int) -> list[bytes]:
    """The fields of /proc/PID/stat after the name (state first), which may hold spaces and parentheses."""
    return read(pid, "stat").rpartition(b")")[2].split()


def stopped(pid: int) -> bool:
    """Whether process `pid` is stopped by a signal (state T: SIGSTOP, SIGTSTP)."""
    return stat_fields(pid)[:1] == [b"T"]


def start_time(pid: int) -> int:
    """When process `pid` started, in clock ticks since boot (stat field 22): with the pid, it names one process."""
    return int(stat_fields(pid)[19])


def environ(pid: int) -> bytes:
    """Process `pid`'s environment as it started, NAME=VALUE entries each ended by NUL."""
    return read(pid, "environ")


def cmdline(pid: int) -> bytes:
    """Process `pid`'s argv, each ended by NUL (empty for a zombie)."""
    return read(pid, "cmdline")


def thread_count() -> int:
    """How many threads this process has."""
    return len(os.listdir("/proc/self/task"))


def threads_after_joins(want: int = 1, within_s: float = 1.0) -> int:
    """How many threads this process has once threads just joined have left /proc, waiting at most `within_s`.

    pthread_join returns when the kernel clears the exiting thread's tid (mm_release), a moment before
    the thread leaves its group (exit_notify): a count taken right after a join can still see it. No
    descriptor reports that moment on every kernel we run on, so /proc is polled; only the launcher's
    start calls this, never a run's path.
    """
    deadline = time.monotonic() + within_s
    while (count := thread_count()) != want and time.monotonic() < deadline:
        time.sleep(0.002)
    return count


def pids() -> Iterator[int]:
    """Every process /proc shows."""
    return (int(name) for name in os.listdir("/proc") if name.isdigit())


def children() -> set[int]:
    """This process's live children, from every thread's /proc/self/task/TID/children."""
    found: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            found.update(int(p) for p in read("self", f"task/{tid}/children").split())
        except OSError:
            continue  # the thread ended meanwhile
    return found


def carries(env: bytes, marker: str) -> bool:
    """Whether environment `env` (as `environ` gives it) holds the entry `marker` (NAME=VALUE)."""
    needle = marker.encode() + b"\0"
    return env.startswith(needle) or b"\0" + needle in env


def carrying(matches: Callable[[bytes], bool]) -> Iterator[int]:
    """The other processes whose environment `matches` (those /proc lets this one read)."""
    me = os.getpid()
    for pid in pids():
        if pid == me:
            continue
        try:
            env = environ(pid)
        except OSError:
            continue  # gone meanwhile, or another user's
        if matches(env):
            yield pid
