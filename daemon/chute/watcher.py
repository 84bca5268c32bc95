"""Inbox watching: which files have finished arriving (contract §5.1, §5.2).

A look at an inbox is one of two kinds. A listing reads the whole top level and
diffs it against the names known from the last one: only new names are judged,
by name alone, and only the candidates (names the inbox takes) are stat'ed. A
targeted look stats just the names that need it: those an inotify event named,
and those whose settle time is up. Polling mode lists every `poll_interval`; in
events mode (inotify) the listing is a backstop for lost events, every
`rescan_interval`. A file is settled when its size and mtime have not changed for
`settle` seconds and no local process has it open for writing.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, WatchDescriptor

from .config import Inbox
from .errors import short_of_resources
from .inotify import Watch
from .mounts import watch_mode
from .namefilter import NameFilter
from .settling import IGNORED, WAIT_MIN, Candidate, Table

WRITE_GRACE = 600.0  # seconds a write seen by inotify holds a file when its close event never comes
RESCAN_INTERVAL = 60.0  # seconds between backstop listings in events mode (defaults.rescan_interval)


@dataclass
class Scan:
    """What one look at an inbox found.

    `ignored` holds each ignored name once per appearance: the watcher remembers what it
    reported and forgets a name when it disappears, so a caller logs every entry without
    keeping a set of its own. `settled` is in the inbox's order; a settled file the caller does not
    claim (no capacity) is offered again at the next look that re-checks it.
    """

    available: bool
    settled: list[tuple[str, os.stat_result]] = field(default_factory=list)
    symlinks: list[str] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None


class Inotified:
    """What the observer thread reported since the last look, under its lock: the service's scan takes it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, float] = {}  # names inotify reported since the last look: when, last
        # Names inotify saw written (IN_MODIFY) and not yet closed (IN_CLOSE_WRITE): a writer
        # /proc cannot show us (smbd as another user under ProtectProc=) still has them open.
        self.writing: dict[str, float] = {}
        self.relist, self.recheck = True, False  # asked for by the observer thread or the service

    def take(self, now: float, listing_due: bool) -> tuple[dict[str, float], bool, bool]:
        """The events to apply, and whether to list the inbox and re-offer its settled files; all reset."""
        with self.lock:
            events, self.events = self.events, {}
            relist, recheck = self.relist or listing_due, self.recheck
            self.relist = self.recheck = False
        return events, relist, recheck

    def put_back(self, events: dict[str, float], relist: bool, recheck: bool) -> None:
        """A look that could not be made: what it was to do is done at the next one."""
        with self.lock:
            self.events = events | self.events
            self.relist, self.recheck = self.relist or relist, self.recheck or recheck

    def writing_since(self, name: str) -> float | None:
        with self.lock:
            return self.writing.get(name)

    def forget(self, name: str) -> None:
        with self.lock:
            self.writing.pop(name, None)


class InboxWatcher:
    """The state of one inbox between looks: the names it holds, what is settling, and when to look next.

    The service's thread calls `scan`, `wait_longer` and `forget`, and alone uses the table of
    names (`files`); the inotify reader thread calls `wrote`, `closed`, `touched`, `hint` and
    `rescan`, which only record what happened (in `inotified`, under its lock) and wake the
    service: `scan` applies it.
    """

    def __init__(
        self,
        inbox: Inbox,
        settle: float,
        poll_interval: float,
        wake: threading.Event | None = None,
        rescan_interval: float = RESCAN_INTERVAL,
    ):
        self.inbox = inbox
        self.path = os.fspath(inbox.path)
        self.wake = wake  # the service's loop, woken by a hint instead of waiting for its tick
        self.settle = settle
        self.poll_interval = poll_interval
        self.rescan_interval = rescan_interval
        self.mode = watch_mode(inbox)
        self.filter = NameFilter(inbox.include, inbox.exclude)
        self.files = Table(settle, inbox.order)  # every name judged at the last look
        self.inotified = Inotified()
        self.folder_id: tuple[int, int] | None = None  # the inbox's (device, inode) at the last listing
        self.next_scan = 0.0
        self.next_listing = 0.0
        self.next_recheck = float("inf")
        self.hinted = threading.Event()
        self.available: bool | None = None
        self.watch: Watch | None = None  # the inotify watch, when events are used

    @property
    def seen(self) -> Mapping[str, Candidate]:
        """Every name judged at the last look, in the order each last changed."""
        return self.files.seen

    def changed_at(self, name: str) -> float:
        return self.files.seen[name].changed_at

    # --- called from the observer thread (and the service) ---

    def _wake(self) -> None:
        self.hinted.set()
        if self.wake is not None:
            self.wake.set()

    def hint(self) -> None:
        """Look again soon at the settled files not claimed yet (a worker is free)."""
        with self.inotified.lock:
            self.inotified.recheck = True
        self._wake()

    def rescan(self) -> None:
        """List the whole inbox at the next look (events may have been lost)."""
        with self.inotified.lock:
            self.inotified.relist = True
        self._wake()

    def wrote(self, name: str, now: float) -> None:
        """inotify: `name` was written to; it is open until its close-after-write."""
        with self.inotified.lock:
            self.inotified.writing[name] = now
            self.inotified.events[name] = now
        self._wake()

    def closed(self, name: str, now: float) -> None:
        """inotify: `name` was closed after writing (or renamed, or deleted)."""
        with self.inotified.lock:
            self.inotified.writing.pop(name, None)
            self.inotified.events[name] = now
        self._wake()

    def touched(self, name: str, now: float) -> None:
        """An event for `name`: it is still changing (or just closed); its settle time starts again."""
        with self.inotified.lock:
            self.inotified.events[name] = now
        self._wake()

    # --- called from the service ---

    def due(self, now: float) -> bool:
        return self.hinted.is_set() or now >= self.next_scan

    def scan(self, now: float, limit: int | None = None) -> Scan:
        """Look at the inbox: list it when a listing is due, else stat only the names that need it.

        Args:
            limit: offer at most this many settled files, the first in the inbox's order (None: all).
        """
        self.hinted.clear()
        events, relist, recheck = self.inotified.take(now, now >= self.next_listing)
        try:
            folder = os.stat(self.path)
            listed = os.listdir(self.path) if relist else None
        except OSError as exc:
            if short_of_resources(exc):
                # The daemon is short of descriptors or memory: nothing is known about the inbox, whose
                # state stays as it was; the caller reports the shortage (issue #19).
                self.inotified.put_back(events, relist, recheck)
                self.next_scan = now + self.poll_interval
                raise
            # A vanished inbox (an unmounted share) is paused, never read as "all files deleted".
            return self._lost(exc.strerror or str(exc), now + self.poll_interval)
        first = self.folder_id is None  # the first listing, or the first since the inbox was lost
        if self._replaced(folder, relist):
            return self._lost("the folder was replaced (remounted?)", now)
        result, looked = Scan(available=True), set[str]()
        for name, when in events.items():  # inotify named these files: their settle time starts again
            self.files.changed(name, when)
        due = self.files.due(now)
        if listed is not None:
            self._relisted(listed, now, result, looked)
        else:
            for name in dict.fromkeys([*events, *due]):
                self._look(name, now, result, looked)
        recheck = recheck or now >= self.next_recheck
        # Settled files not looked at now may come before those that were, in the inbox's order.
        if recheck or (limit != 0 and len(self.files.ready) > len(looked)):
            self._recheck(now, result, looked, limit)
        result.settled = self.files.offer(looked, limit)
        self._plan(now, relist, recheck or relist, first)
        return result

    def wait_longer(self, name: str, now: float) -> None:
        """Still open for writing: look again in a while."""
        self.files.wait(name, now)
        self.next_scan = min(self.next_scan, now + max(self.settle, WAIT_MIN))

    def forget(self, name: str) -> None:
        """`name` left the inbox (claimed): a file of that name appearing later is new."""
        self._gone(name)

    # --- one look ---

    def _lost(self, error: str, retry_at: float) -> Scan:
        with self.inotified.lock:
            self.inotified.relist = True  # when it is back, list it: anything may have changed meanwhile
        self.folder_id = None
        self.next_listing = self.next_scan = retry_at
        return Scan(available=False, error=error)

    def _replaced(self, folder: os.stat_result, relist: bool) -> bool:
        """In events mode, whether the inbox is another folder than at the last listing (its watch is stale)."""
        fid = (folder.st_dev, folder.st_ino)
        # Not in polling mode: a network share's inode numbers may change under us (cifs noserverino).
        if self.mode == "events" and self.folder_id is not None and fid != self.folder_id:
            return True
        if relist:
            self.folder_id = fid
        return False

    def _relisted(self, listed: list[str], now: float, result: Scan, looked: set[str]) -> None:
        """A listing: forget the names that went, judge the new ones, stat every candidate again."""
        present = set(listed)
        for name in self.files.seen.keys() - present:
            self._gone(name)
        known = [name for name, c in self.files.seen.items() if c.kind != IGNORED]
        for name in present - self.files.seen.keys():
            self._look(name, now, result, looked)
        for name in known:
            self._look(name, now, result, looked)

    def _recheck(self, now: float, result: Scan, looked: set[str], limit: int | None) -> None:
        """Stat again the settled files not claimed yet, in the inbox's order, until `limit` are still settled."""
        still = 0
        for name in self.files.ranked(self.files.ready):
            if limit is not None and still >= limit:
                break
            if name not in looked:
                self._look(name, now, result, looked)
            still += name in self.files.ready

    def _look(self, name: str, now: float, result: Scan, looked: set[str]) -> None:
        """Judge one name: by name first (never a stat for an ignored one), then by what lstat says it is."""
        known = self.files.kind(name)
        if known == IGNORED:
            return
        if known is None:
            reason = self.filter.reason(name)
            if reason is not None:
                self.files.judged(name, IGNORED)
                result.ignored.append((name, reason))
                return
        try:
            st = os.lstat(f"{self.path}/{name}")
        except FileNotFoundError:
            self._gone(name)
            return
        except OSError:
            return  # judged again at the next listing
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFREG:
            if self.files.looked(name, st, now, self._still_writing):
                looked.add(name)
            return
        if kind == stat.S_IFLNK:
            result.symlinks.append(name)  # at every look: the service quarantines it, again if that failed
        elif kind == stat.S_IFDIR and known != kind:
            result.ignored.append((name, "a folder"))  # contract §5.1: folders are not taken
        self.files.judged(name, kind)  # a FIFO, a socket, a device: nothing to claim

    def _still_writing(self, name: str, now: float) -> bool:
        since = self.inotified.writing_since(name)
        # A close event lost to a queue overflow must not hold a file for ever.
        return since is not None and now - since < WRITE_GRACE

    # --- bookkeeping ---

    def _plan(self, now: float, relisted: bool, rechecked: bool, first: bool) -> None:
        """When to look next: the next listing, the next settle time, or a re-offer of unclaimed files."""
        if relisted:
            # After the first listing (at start, or the inbox back from an outage), a second one a
            # poll later catches what was dropped before the service's new inotify watch was in place.
            events = self.mode == "events" and self.watch is not None and not first
            self.next_listing = now + (self.rescan_interval if events else self.poll_interval)
        if not self.files.ready:
            self.next_recheck = float("inf")
        elif rechecked or self.next_recheck == float("inf"):
            self.next_recheck = now + self.poll_interval
        self.next_scan = min(self.next_listing, self.next_recheck, self.files.next_timer())

    def _gone(self, name: str) -> None:
        self.files.forget(name)
        self.inotified.forget(name)


class EventHint:
    """Feeds inotify events of one inbox to its watcher, from the inotify reader thread (inotify.Observer)."""

    def __init__(self, watcher: InboxWatcher, clock: Callable[[], float]):
        self.watcher, self.clock = watcher, clock

    def on_event(self, event: InotifyEvent) -> None:
        if event.is_delete_self or event.is_move_self or event.mask & InotifyConstants.IN_UNMOUNT:
            self.watcher.rescan()  # the inbox itself went: the next listing finds out
            return
        if not event.name:
            return  # the folder's own attributes changed: nothing about the files in it
        name, now = os.fsdecode(event.name), self.clock()
        if event.is_directory:
            self.watcher.touched(name, now)
        elif event.is_modify:
            self.watcher.wrote(name, now)
        elif event.is_close_write or event.is_move or event.is_delete:
            self.watcher.closed(name, now)
        else:
            self.watcher.touched(name, now)

    def on_watch_deleted(self, wd: WatchDescriptor) -> None:
        """The kernel dropped the watch (the folder was deleted or unmounted): the next look finds out."""
        self.watcher.rescan()

    def on_queue_overflow(self) -> None:
        """Events were lost (IN_Q_OVERFLOW): list the inbox at the next look."""
        self.watcher.rescan()
