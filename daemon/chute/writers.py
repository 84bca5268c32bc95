"""Which files local processes have open for writing, from /proc (contract §5.2: a file being written waits)."""

from __future__ import annotations

import os
import stat
from collections.abc import Collection

from . import procs

# A /proc walk for open writers is reused this long (Writers): a file still being written was
# written within its settle time, which inotify or its mtime shows; this only bounds the lag of
# a writer that opened a settled file and has not written yet.
WALK_TTL = 0.25


class Writers:
    """Which files local processes have open for writing, for a stream of claims.

    A walk of /proc (one stat per open descriptor on the host) is the daemon's largest cost
    while it drains a backlog, claiming a file every few milliseconds: the map of open
    regular files it makes is reused for WALK_TTL seconds, and only the descriptors that
    hold a candidate have their open flags read, fresh, at each question.
    """

    def __init__(self) -> None:
        self.walked_at = float("-inf")
        self.open: dict[tuple[int, int], list[tuple[str, str]]] = {}

    def busy(self, candidates: Collection[tuple[int, int]], now: float) -> set[tuple[int, int]]:
        if not candidates:
            return set()
        if now - self.walked_at >= WALK_TTL:
            self.open, self.walked_at = _open_files(), now
        found = set()
        for key in candidates:
            for pid, fd in self.open.get(key, ()):
                try:
                    if _open_flags(pid, fd) & (os.O_WRONLY | os.O_RDWR):
                        found.add(key)
                        break
                except (OSError, ValueError):
                    continue  # closed meanwhile
        return found


def _open_files() -> dict[tuple[int, int], list[tuple[str, str]]]:
    """(device, inode) of every regular file open on this host -> [(pid, fd)], from /proc."""
    found: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for pid in procs.pids():
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.setdefault((st.st_dev, st.st_ino), []).append((str(pid), fd))
    return found


def _open_flags(pid: str, fd: str) -> int:
    """The open(2) flags of one descriptor, from proc(5) /proc/<pid>/fdinfo/<fd> ("flags:\t0100001")."""
    f = os.open(f"/proc/{pid}/fdinfo/{fd}", os.O_RDONLY)
    try:
        data = os.read(f, 512)
    finally:
        os.close(f)
    at = data.index(b"flags:") + 6
    return int(data[at : data.index(b"\n", at)], 8)
