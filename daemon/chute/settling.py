"""What an inbox's watcher knows of each name in it, and when each file has settled (contract §5.2).

A file is settled when its size and mtime have not changed for `settle` seconds
(and no writer holds it: the caller says). One table holds every name the
watcher judged; its two indexes (the settled files in the order they settled,
a heap of times to look again) are kept in step by its own methods only.
"""

from __future__ import annotations

import heapq
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .ordering import File, key

IGNORED = 0  # the kind of a name the inbox does not take: judged by name alone, never stat'ed
REGULAR = stat.S_IFREG
WAIT_MIN = 0.5  # seconds at least before a file held by a writer is looked at again


@dataclass(slots=True)
class Candidate:
    """What the last look saw at one name in the inbox."""

    kind: int  # stat.S_IFMT of its lstat, or IGNORED
    size: int = 0
    mtime_ns: int = 0
    changed_at: float = 0.0  # when its size or mtime last changed, or inotify named it: its settle time runs from here
    look_at: float | None = None  # when its pending timer is due
    settled: os.stat_result | None = None  # its lstat at the look that found it settled; None until then
    signature: int = 0  # a folder delivery's names, sizes and mtimes beneath (folders.FolderStat); 0 for a file


class Table:
    """Every name judged at the last look, in the order each last changed; used by the service's thread only."""

    def __init__(self, settle: float, order: str = "oldest"):
        self.settle = settle
        self.key = key(order)
        self.seen: dict[str, Candidate] = {}
        self.ready: dict[str, None] = {}  # the settled files not claimed yet, in the order they settled
        self.timers: list[tuple[float, str]] = []  # (when, name): counts only while `when` is its look_at

    def kind(self, name: str) -> int | None:
        c = self.seen.get(name)
        return None if c is None else c.kind

    def judged(self, name: str, kind: int) -> None:
        """`name` is ignored, or not a regular file: nothing to settle, nothing to claim."""
        c = self.seen.get(name)
        if c is None or c.kind != kind:
            self.forget(name)
            self.seen[name] = Candidate(kind)

    def looked(self, name: str, st: os.stat_result, now: float, writing: Callable[[str, float], bool]) -> bool:
        """A regular file at a look: whether it has settled (start its settle time again if it changed)."""
        c = self.seen.get(name)
        signature = getattr(st, "signature", 0)
        if (
            c is None
            or c.kind != REGULAR
            or (c.size, c.mtime_ns, c.signature) != (st.st_size, st.st_mtime_ns, signature)
        ):
            self.forget(name)
            self.seen[name] = Candidate(REGULAR, st.st_size, st.st_mtime_ns, now, signature=signature)
            self.timer(name, now + self.settle)
        elif now - c.changed_at < self.settle:
            self.timer(name, c.changed_at + self.settle)
        elif writing(name, now):
            self._unready(name, c)
            self.timer(name, now + max(self.settle, WAIT_MIN))
        else:
            c.look_at, c.settled = None, st
            self.ready[name] = None
            return True
        return False

    def changed(self, name: str, when: float) -> None:
        """Something happened to `name` at `when` (an inotify event, a writer): its settle time starts again."""
        c = self.seen.get(name)
        if c is not None and c.kind == REGULAR and when > c.changed_at:
            self._restart(name, c, when)

    def wait(self, name: str, now: float) -> None:
        """Still open for writing: not settled before another settle time."""
        c = self.seen.get(name)
        if c is not None and c.kind == REGULAR:
            self._restart(name, c, now)
            self.timer(name, now + max(self.settle, WAIT_MIN))

    def hold(self, name: str, until: float | None) -> None:
        """A settled name not offered now: looked at again at `until` (None: at the next listing or event)."""
        c = self.seen.get(name)
        if c is not None:
            self._unready(name, c)
            if until is not None:
                self.timer(name, until)

    def forget(self, name: str) -> None:
        self.seen.pop(name, None)
        self.ready.pop(name, None)

    def timer(self, name: str, when: float) -> None:
        c = self.seen[name]
        if c.look_at != when:
            c.look_at = when
            heapq.heappush(self.timers, (when, name))

    def due(self, now: float) -> list[str]:
        """Names whose settle time is up (entries of files that changed again or left are dropped)."""
        due = []
        while self.timers and self.timers[0][0] <= now:
            when, name = heapq.heappop(self.timers)
            if not self._stale(when, name):
                self.seen[name].look_at = None
                due.append(name)
        return due

    def next_timer(self) -> float:
        while self.timers and self._stale(*self.timers[0]):
            heapq.heappop(self.timers)  # changed again or left the inbox: not a reason to wake up
        return self.timers[0][0] if self.timers else float("inf")

    def offer(self, looked: Iterable[str], limit: int | None) -> list[tuple[str, os.stat_result]]:
        """The settled files among `looked`, in the inbox's order, at most `limit`."""
        names = self.ranked(n for n in looked if n in self.ready)
        return [(n, st) for n in names[:limit] if (st := self.seen[n].settled) is not None]

    def ranked(self, names: Iterable[str]) -> list[str]:
        """`names` (known regular files) in the inbox's order (contract §11 `order`)."""
        return sorted(names, key=lambda n: self.key(self._file(n)))

    def _file(self, name: str) -> File:
        c = self.seen[name]
        return File(name, c.size, c.mtime_ns, c.changed_at)

    def _restart(self, name: str, c: Candidate, when: float) -> None:
        c.changed_at = when
        self.seen[name] = self.seen.pop(name)  # to the end: `seen` stays in the order files last changed
        self._unready(name, c)

    def _unready(self, name: str, c: Candidate) -> None:
        c.settled = None
        self.ready.pop(name, None)

    def _stale(self, when: float, name: str) -> bool:
        c = self.seen.get(name)
        return c is None or c.look_at != when
