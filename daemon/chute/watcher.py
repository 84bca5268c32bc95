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
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import folders
from .config import Inbox
from .errors import short_of_resources
from .inotified import EventHint, Inotified
from .inotify import Watch
from .mounts import watch_mode
from .namefilter import NameFilter
from .settling import IGNORED, WAIT_MIN, Candidate, Table
from .stems import Stems

__all__ = ["EventHint", "InboxWatcher", "Scan"]
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
    waiting: list[str] = field(default_factory=list)  # sidecars settled with no main file (said once)
    error: str | None = None


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
        # A stem inbox tracks every name not ignored (its sidecars too); `include` then picks its main files.
        # A folder inbox's names are folders: `include` is for the files a job takes from them.
        self.filter = NameFilter(inbox.include if inbox.unit == "file" else ["*"], inbox.exclude)
        self.stems = Stems(inbox.include, inbox.exclude) if inbox.unit == "stem" else None
        self.waiting: set[str] = set()  # sidecars said to be waiting for their main file
        self.folders: dict[str, folders.FolderStat] = {}  # each folder delivery at its last walk
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

    def hold(self, name: str, until: float) -> None:
        """A settled main file whose sidecars may still come: offered again at `until`."""
        self.files.hold(name, until)
        self.next_scan = min(self.next_scan, until)

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
        if self.inbox.unit == "folder" and kind in (stat.S_IFREG, stat.S_IFDIR):
            self._look_folder(name, kind, known, now, result, looked)
            return
        if kind == stat.S_IFREG:
            if self.files.looked(name, st, now, self._still_writing):
                if self.stems is None or self.stems.is_main(name):
                    looked.add(name)
                else:
                    self._sidecar(name, result)
            return
        if kind == stat.S_IFLNK:
            result.symlinks.append(name)  # at every look: the service quarantines it, again if that failed
        elif kind == stat.S_IFDIR and known != kind:
            result.ignored.append((name, "a folder"))  # contract §5.1: folders are not taken
        self.files.judged(name, kind)  # a FIFO, a socket, a device: nothing to claim

    def _look_folder(self, name: str, kind: int, known: int | None, now: float, result: Scan, looked: set[str]) -> None:
        """A folder inbox: a folder is walked and settles as one delivery; a loose file is not one."""
        if kind == stat.S_IFREG:
            if known is None:
                result.ignored.append((name, "not a folder"))  # contract §12: the folders are the deliveries
                self.files.judged(name, IGNORED)
            return
        try:
            walked = folders.walk(f"{self.path}/{name}", self.inbox.ready_file)
        except FileNotFoundError:
            self._gone(name)
            return
        except OSError:
            return  # judged again at the next look
        self.folders[name] = walked
        if self.files.looked(name, walked, now, self._not_ready):  # type: ignore[arg-type]
            looked.add(name)

    def _not_ready(self, name: str, now: float) -> bool:
        walked = self.folders.get(name)
        return (walked is not None and not walked.ready) or self._still_writing(name, now)

    def _sidecar(self, name: str, result: Scan) -> None:
        """A settled sidecar is never offered alone; one with no main file is said to wait, once."""
        self.files.hold(name, None)
        if name not in self.waiting and self.stems is not None and self.stems.main_of(name, self.files.seen) is None:
            self.waiting.add(name)
            result.waiting.append(name)

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
        self.waiting.discard(name)
        self.folders.pop(name, None)
        self.inotified.forget(name)
