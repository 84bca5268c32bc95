"""`unit: folder` (contract §12): a top-level folder of an inbox judged as one delivery, by walking it."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class FolderStat:
    """What a walk of a folder delivery saw: the fields a settle table reads, and what its claim needs.

    `st_size` is every file's bytes together and `st_mtime_ns` the latest mtime of anything beneath;
    `signature` is made of every name, size and mtime beneath, so a change anywhere beneath changes
    it (in events mode a change deep in a folder raises no event at the top), even one within the
    same tick of the filesystem's clock as the last (an empty file made beside another).
    """

    st_dev: int
    st_ino: int
    st_size: int
    st_mtime_ns: int
    files: frozenset[tuple[int, int]]  # (device, inode) of every regular file beneath: for the open-writer check
    link: str | None  # the first symlink found beneath (relative), never followed: the delivery is refused whole
    ready: bool  # the ready_file is there (or none is asked for)
    signature: int  # a hash of (path, size, mtime) of everything beneath, for this process's comparisons


def walk(path: str, ready_file: str | None) -> FolderStat:
    """Walk the folder at `path` without following any symlink (OSError when it went meanwhile)."""
    top = os.lstat(path)
    size, latest, files, link, seen = 0, top.st_mtime_ns, set(), None, []
    stack = [(path, "")]
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                latest = max(latest, st.st_mtime_ns)
                seen.append((prefix + e.name, st.st_size, st.st_mtime_ns))
                if stat.S_ISDIR(st.st_mode):
                    stack.append((e.path, f"{prefix}{e.name}/"))
                elif stat.S_ISREG(st.st_mode):
                    size += st.st_size
                    files.add((st.st_dev, st.st_ino))
                elif stat.S_ISLNK(st.st_mode) and link is None:
                    link = prefix + e.name
    ready = ready_file is None or os.path.lexists(os.path.join(path, ready_file))
    signature = hash(tuple(sorted(seen)))
    return FolderStat(top.st_dev, top.st_ino, size, latest, frozenset(files), link, ready, signature)


def keys(st: os.stat_result | FolderStat) -> frozenset[tuple[int, int]]:
    """The (device, inode) of every file a settled delivery holds: the file, or every file beneath the folder."""
    return st.files if isinstance(st, FolderStat) else frozenset({(st.st_dev, st.st_ino)})
