"""Hashes computed while a file is read once: xxh128 always, plus whatever a delivery's checksums use.

Every algorithm of one file is fed the same chunk before the next is read, so the bytes
are read once however many hashes they get; a hashing copy writes each chunk too.
hashlib and xxhash release the GIL on large buffers, so other threads (the daemon's
heartbeats, other runs in a Dask worker) keep going while a card is hashed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import xxhash

CHUNK = 1 << 20  # bytes per read: large enough that a hash update releases the GIL and syscalls are few
ALWAYS = "xxh128"  # every input file gets it (the manifest's `inputs`, ASC MHL's default)


class Hasher(Protocol):
    def update(self, data: Any, /) -> None: ...

    def hexdigest(self) -> str: ...


# The algorithms chute computes, by the names the manifest uses (ASC MHL's own, plus sha256 and xxh32).
ALGORITHMS: dict[str, Callable[[], Hasher]] = {
    "md5": hashlib.md5,
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "xxh32": xxhash.xxh32,
    "xxh64": xxhash.xxh64,
    "xxh3": xxhash.xxh3_64,
    "xxh128": xxhash.xxh3_128,
}


@dataclass(frozen=True)
class Digest:
    """What one read of a file gave: its size and its hashes (hex, lower case), by algorithm."""

    size: int
    hashes: dict[str, str] = field(default_factory=dict)


def _hashers(algorithms: Iterable[str]) -> dict[str, Hasher]:
    return {name: ALGORITHMS[name]() for name in sorted({ALWAYS, *algorithms})}


def _feed(read: Callable[[memoryview], int], hashers: dict[str, Hasher], write: Callable[[Any], Any] | None) -> int:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    size = 0
    while n := read(view):
        chunk = view[:n]
        for h in hashers.values():
            h.update(chunk)
        if write is not None:
            write(chunk)
        size += n
    return size


def hash_file(path: Path, algorithms: Iterable[str] = ()) -> Digest:
    """Read `path` once and return its size and its hashes (xxh128 and `algorithms`)."""
    hashers = _hashers(algorithms)
    with open(path, "rb", buffering=0) as f:
        _advise(f.fileno())
        size = _feed(f.readinto, hashers, None)
    return Digest(size, {name: h.hexdigest() for name, h in hashers.items()})


def copy_hashing(src: Path, dst: Path, algorithms: Iterable[str] = ()) -> Digest:
    """Copy `src` to a new `dst` (not fsynced: for workspaces) and return the hashes of the bytes copied."""
    hashers = _hashers(algorithms)
    with open(src, "rb", buffering=0) as fin, open(dst, "xb", buffering=0) as fout:
        _advise(fin.fileno())
        size = _feed(fin.readinto, hashers, _writer(fout))
    return Digest(size, {name: h.hexdigest() for name, h in hashers.items()})


def _writer(f: Any) -> Callable[[memoryview], None]:
    def write(chunk: memoryview) -> None:
        while chunk:
            chunk = chunk[f.write(chunk) :]

    return write


def _advise(fd: int) -> None:
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)  # a read-ahead twice as long: one pass over the file
    except OSError:
        pass
