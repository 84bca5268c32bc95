"""Hashes computed while a file is read once: xxh128 always, plus whatever a delivery's checksums use.

Every algorithm of one file is fed the same chunk before the next is read, so the bytes
are read once however many hashes they get; a hashing copy writes each chunk too.
hashlib and xxhash release the GIL on large buffers, so other threads (the daemon's
heartbeats, other runs in a Dask worker) keep going while a card is hashed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
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


def _feed(
    read: Callable[[memoryview], int],
    update: Callable[[memoryview], None],
    buffer: Callable[[], memoryview],
    sink: Callable[[memoryview, int], None] | None = None,
) -> int:
    """Read chunks into the buffers `buffer` gives until the end, hand each to `update` and to `sink`."""
    size = 0
    while True:
        view = buffer()
        n = read(view)
        if not n:
            if sink is not None:
                sink(view, 0)  # the buffer goes back unused
            return size
        update(view[:n])
        if sink is not None:
            sink(view, n)
        size += n


# What each algorithm costs per byte, roughly (md5 is the slowest; xxh* are 20-50 times faster).
COST = {"md5": 17, "sha1": 10, "sha256": 7, "xxh32": 1, "xxh64": 1, "xxh3": 1, "xxh128": 1}


@contextlib.contextmanager
def _updater(hashers: dict[str, Hasher], size: int) -> Iterator[Callable[[memoryview], None]]:
    """A function feeding a chunk to every hasher: on two threads when two slow ones share a large file."""
    names = sorted(hashers, key=lambda n: -COST[n])
    if size <= 2 * CHUNK or len(names) < 2 or COST[names[1]] < 5:

        def update(chunk: memoryview) -> None:
            for h in hashers.values():
                h.update(chunk)

        yield update
        return
    split = _Split([hashers[names[0]]], [hashers[n] for n in names[1:]])  # md5 alone; sha256 and xxh128 beside it
    try:
        yield split.update
    finally:
        split.close()


class _Split:
    """Two groups of hashers fed each chunk at once, one on a thread of its own.

    md5 beside sha256 then costs the slower of the two, not their sum: both release the GIL while they hash.
    """

    def __init__(self, mine: list[Hasher], theirs: list[Hasher]):
        self.mine, self.theirs = mine, theirs
        self.todo: queue.Queue[memoryview | None] = queue.Queue(maxsize=1)
        self.done: queue.Queue[None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="chute-hash", daemon=True)
        self.thread.start()

    def update(self, chunk: memoryview) -> None:
        self.todo.put(chunk)
        for h in self.mine:
            h.update(chunk)
        self.done.get()  # the chunk's buffer is read into again only once both are done with it

    def close(self) -> None:
        self.todo.put(None)
        self.thread.join()

    def _run(self) -> None:
        while (chunk := self.todo.get()) is not None:
            for h in self.theirs:
                h.update(chunk)
            self.done.put(None)


def hash_file(path: Path, algorithms: Iterable[str] = ()) -> Digest:
    """Read `path` once and return its size and its hashes (xxh128 and `algorithms`)."""
    hashers = _hashers(algorithms)
    view = _buffer()
    with _named(path), open(path, "rb", buffering=0) as f:
        _advise(f.fileno())
        with _updater(hashers, os.fstat(f.fileno()).st_size) as update:
            size = _feed(f.readinto, update, lambda: view)
    return Digest(size, {name: h.hexdigest() for name, h in hashers.items()})


_local = threading.local()


def _buffer() -> memoryview:
    """This thread's read buffer, made once: a card of 500 small files needs no 500 zeroed MiB."""
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(CHUNK))
    return view


def copy_hashing(src: Path, dst: Path, algorithms: Iterable[str] = ()) -> Digest:
    """Copy `src` to a new `dst` (not fsynced: for workspaces) and return the hashes of the bytes copied.

    The writes go on a thread of their own while the next chunk is read and hashed: with two
    CPUs the copy costs about what the slower of hashing and writing does, not their sum.
    """
    hashers = _hashers(algorithms)
    with open(src, "rb", buffering=0) as fin, open(dst, "xb", buffering=0) as fout:
        _advise(fin.fileno())
        total = os.fstat(fin.fileno()).st_size
        with _updater(hashers, total) as update:
            if total <= 2 * CHUNK:  # a sidecar, a list: not worth a thread
                view = _buffer()
                with _named(src):
                    size = _feed(fin.readinto, update, lambda: view, lambda c, n: _write(fout.fileno(), c[:n], dst))
            else:
                writer = _Writer(fout.fileno())
                try:
                    with _named(src):
                        size = _feed(fin.readinto, update, writer.buffer, writer.put)
                finally:
                    with _named(dst):
                        writer.close()
    return Digest(size, {name: h.hexdigest() for name, h in hashers.items()})


def _write(fd: int, chunk: memoryview, path: Path | None = None) -> None:
    with _named(path) if path is not None else contextlib.nullcontext():
        while chunk:
            chunk = chunk[os.write(fd, chunk) :]


class _Writer:
    """Writes full buffers to a descriptor on its own thread and hands them back; the first error is kept."""

    def __init__(self, fd: int, count: int = 3):
        self.fd = fd
        self.free: queue.Queue[memoryview] = queue.Queue()
        self.full: queue.Queue[tuple[memoryview, int] | None] = queue.Queue()
        for _ in range(count):
            self.free.put(memoryview(bytearray(CHUNK)))
        self.error: OSError | None = None
        self.thread = threading.Thread(target=self._run, name="chute-copy-writer", daemon=True)
        self.thread.start()

    def buffer(self) -> memoryview:
        if self.error is not None:
            raise self.error  # ENOSPC in the workspace: stop reading now
        return self.free.get()

    def put(self, view: memoryview, n: int) -> None:
        self.full.put((view, n))

    def close(self) -> None:
        """Wait for the writes queued; raises the first error one of them met."""
        self.full.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while (item := self.full.get()) is not None:
            view, n = item
            try:
                if self.error is None:
                    _write(self.fd, view[:n])
            except OSError as exc:
                self.error = exc
            self.free.put(view)


@contextlib.contextmanager
def _named(path: Path) -> Iterator[None]:
    """An OSError of a read or write (EIO, ENOSPC) names its file, as open's does: the log says which."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def _advise(fd: int) -> None:
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)  # a read-ahead twice as long: one pass over the file
    except OSError:
        pass
