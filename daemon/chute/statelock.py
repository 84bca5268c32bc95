"""One daemon per state_dir: a lock file held with flock(2) for the daemon's life (contract §11)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import AlreadyRunning

FILE = "daemon.lock"


class StateLock:
    """The state_dir's lock, held until `release()` or the process's death (the kernel drops it then)."""

    def __init__(self, fd: int, path: Path):
        self.fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        """Take the lock and write our pid in it; AlreadyRunning names the pid that holds it."""
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / FILE
        # Never unlinked: a daemon that removed it while another opened it would let a third one in.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _pid(fd)
            os.close(fd)
            raise AlreadyRunning(f"already running: pid {holder or '?'} holds {state_dir}") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor of the open file drops the flock
            self.fd = None


def _pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None  # the holder is between its flock and its write
