"""Module processes: started in their own process group, read as their output comes, stopped for sure.

A module is started either by a warm launcher (forked from a process that has
imported the common libraries) or as a fresh interpreter; the step engine
(pipeline.py) sees the same thing either way: a pid that leads its own process
group, two pipes to read, and an exit status.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from . import procs
from .errors import ChuteError

PROGRESS_PREFIX = b"CHUTE_PROGRESS "
TAIL_LINES = 20  # lines of stderr kept for the failure report
# A module may print megabytes without a newline: at most this much is one "line"
# (the rest follows as more lines), and at most TAIL_CHARS of each goes into the tail.
LINE_LIMIT = 64 * 1024
TAIL_CHARS = 1024
READ_SIZE = 64 * 1024
_subreaper = False  # become_subreaper() succeeded in this process


class BoundedLog:
    """An append-only log file that keeps roughly its last `limit` bytes.

    Best effort: when the workspace's disk is full or gone, the log stops (the stderr
    tail kept in memory still reaches the report) and the run goes on to its verdict,
    which calls that the machine's fault.
    """

    def __init__(self, path: Path, limit: int):
        self.path, self.limit = path, limit
        self.file: BinaryIO | None = open(path, "ab")

    def write(self, data: bytes) -> None:
        if self.file is None:
            return
        try:
            self.file.write(data)
            if self.file.tell() > 2 * self.limit:
                self._compact()
        except OSError:
            self.close()

    def _compact(self) -> None:
        assert self.file is not None
        self.file.flush()
        with open(self.path, "rb") as f:
            f.seek(-self.limit, os.SEEK_END)
            f.readline()  # start at a line boundary
            keep = f.read()
        self.file.close()
        self.file = None
        tmp = self.path.with_name(self.path.name + ".compact")
        with open(tmp, "wb") as f:
            f.write(b"[chute: earlier output dropped to keep this log bounded]\n" + keep)
        os.replace(tmp, self.path)
        self.file = open(self.path, "ab")

    def close(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):  # the last buffered lines could not be written: the disk is full
                self.file.close()
            self.file = None


class _Stream:
    """One of a module's output pipes, split into lines as it is read."""

    def __init__(self, fd: int, on_line: Callable[[bytes], None]):
        self.fd, self.on_line = fd, on_line
        self.pending = b""
        os.set_blocking(fd, False)

    def read(self) -> bool:
        """Read what is there; False at end of file (then close() it)."""
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return True
        if not data:
            return False
        self.pending += data
        while True:
            cut = self.pending.find(b"\n", 0, LINE_LIMIT)
            if cut < 0 and len(self.pending) < LINE_LIMIT:
                return True
            end = cut + 1 if cut >= 0 else LINE_LIMIT
            self.on_line(self.pending[:end])
            self.pending = self.pending[end:]

    def close(self) -> None:
        if self.fd < 0:
            return
        if self.pending:
            self.on_line(self.pending)
            self.pending = b""
        os.close(self.fd)
        self.fd = -1


class ModuleProcess:
    """One attempt of one entry: a module process in its own process group."""

    def __init__(
        self,
        argv: list[str],
        cwd: str,
        env: dict[str, str],
        log: BoundedLog,
        marker: str,
        spawn: Callable[[list[str], str, dict[str, str], int, int], int] | None = None,
        on_progress: Callable[[float], None] | None = None,
    ):
        self.log, self.marker, self.on_progress = log, marker, on_progress
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.started = time.monotonic()
        self.returncode: int | None = None
        self.exit_reason: str | None = None  # why there is no exit status (the launcher died)
        self.popen: subprocess.Popen | None = None
        self.pidfd = -1
        self.fallback: str | None = None  # why the warm launcher was not used
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            self.pid = self._start(argv, cwd, env, out_w, err_w, spawn)
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        self.streams = [_Stream(out_r, self._stdout_line), _Stream(err_r, self._stderr_line)]

    def _start(self, argv, cwd, env, out_w, err_w, spawn) -> int:
        if spawn is not None:
            try:
                return spawn(argv, cwd, env, out_w, err_w)
            except ChuteError as exc:  # the launcher cannot start: a fresh interpreter does the same job
                self.fallback = str(exc)
        # start_new_session: the module and everything it forks share a new process group (and
        # session), so the whole tree can be signalled, and a terminal's Ctrl-C reaches chute only.
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            start_new_session=True,
            close_fds=True,
        )
        self.pidfd = procs.pidfd(self.popen.pid)
        return self.popen.pid

    def _stdout_line(self, line: bytes) -> None:
        if line.startswith(PROGRESS_PREFIX):
            try:
                value = min(1.0, max(0.0, float(line[len(PROGRESS_PREFIX) :].strip())))
            except ValueError:
                return
            if self.on_progress is not None:
                self.on_progress(value)
            return
        self.log.write(line if line.endswith(b"\n") else line + b"\n")

    def _stderr_line(self, line: bytes) -> None:
        self.log.write(line if line.endswith(b"\n") else line + b"\n")
        self.stderr_tail.append(line[:TAIL_CHARS].decode("utf-8", "replace").rstrip("\n"))

    def reap_fresh(self) -> None:
        """The pidfd said a fresh module exited: collect its status."""
        assert self.popen is not None
        self.returncode = self.popen.wait()
        os.close(self.pidfd)
        self.pidfd = -1

    def set_exit(self, returncode: int | None, reason: str | None = None) -> None:
        self.returncode, self.exit_reason = returncode, reason

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.EPERM):
                raise

    def close(self) -> None:
        """Give up on the pipes (whatever still holds them was killed) and close the log."""
        for s in self.streams:
            s.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        self.log.close()

    @property
    def duration(self) -> float:
        return time.monotonic() - self.started


# --- processes that escaped a module's group ---


def become_subreaper() -> None:
    """Make orphaned descendants of this process's modules its own children (procs.become_subreaper); OSError if not.

    Then a module's child that double-forked out of its group and session (and even
    cleared its environment) is still found: it is one of our children that we did not
    start. Only for a process that runs modules and nothing else (a pool worker).
    """
    global _subreaper
    procs.become_subreaper()
    _subreaper = True


def is_subreaper() -> bool:
    return _subreaper


def kill_orphans(known: set[int], marker: str | None = None) -> int:
    """SIGKILL and reap our children that we did not start (escaped module processes).

    With `marker`, only those whose environment carries it (one entry's); without, all.
    """
    killed = 0
    for pid in procs.children() - known:
        if marker is not None and not _carries(pid, marker):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            killed += 1
        except (ProcessLookupError, ChildProcessError):
            pass
    return killed


def _carries(pid: int, marker: str) -> bool:
    try:
        return procs.carries(procs.environ(pid), marker)
    except OSError:  # gone meanwhile: nothing to kill
        return False


def sweep(marker: str) -> int:
    """SIGKILL every process on this host whose environment carries `marker` (e.g. `CHUTE_RUN_ID=...`).

    A walk of all of /proc: for a dead daemon's leftovers, and where this process is not
    the modules' subreaper. Returns how many were killed.
    """
    return kill_where(lambda env: procs.carries(env, marker))


def kill_where(matches: Callable[[bytes], bool]) -> int:
    """SIGKILL every other process whose /proc environ `matches`; returns how many were killed."""
    killed = 0
    for pid in procs.carrying(matches):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except OSError:
            pass
    return killed
