"""The inboxes: watching them, telling when a file has finished arriving, and claiming it.

Returns values (claims made, inboxes that came and went) and never calls back
into the service. The truth is each inbox's periodic scan; inotify events
(one reader thread for all inboxes, inotify.py) only make the next look come sooner.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from . import claims, folders, grouping, logs, ordering, schedule
from .config import Config, Inbox
from .errors import resources_fields, short_of_resources
from .inotify import Observer
from .leases import STATE_DIR, Identity
from .watcher import EventHint, InboxWatcher
from .writers import Writers

log = logs.get("chute.intake")
# A file found settled, or a symlink (no stat: it is not followed), with when it last changed.
Settled = tuple[float, InboxWatcher, str, os.stat_result | folders.FolderStat | None]
OBSERVER_JOIN = 5.0  # seconds the inotify observer thread gets to stop
SCHEDULE_RECHECK = 300.0  # seconds between looks at the schedules without a window opening or closing


@dataclass(frozen=True)
class Claimed:
    inbox: Inbox
    run_id: str
    claim: Path
    name: str
    symlink: bool  # not followed: it goes to the quarantine as it is
    poison: str | None = None  # a delivery refused whole (a symlink inside a folder): quarantined with this reason


@dataclass(frozen=True)
class Change:
    """An inbox became unavailable (an unmounted share) or available again."""

    inbox: Path
    available: bool
    reason: str | None = None


def _make_folders(inbox: Inbox) -> None:
    """Make the inbox's folders that are missing; one that cannot be made is logged (the inbox is unavailable)."""
    # Created at start (contract §4); a delivery never creates them (an unmounted share must stay absent).
    # The inbox only with `create: true`: else a missing one is watched until it appears (contract §11).
    for folder in (inbox.path if inbox.create else None, inbox.outbox, inbox.quarantine, inbox.archive):
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("inbox.unavailable", inbox=str(inbox.path), folder=str(folder), reason=exc.strerror)


class Intake:
    def __init__(self, me: Identity, wake: threading.Event, clock=time.monotonic):
        self.me, self.wake, self.clock = me, wake, clock
        self.watchers: dict[Path, InboxWatcher] = {}
        self.observer = Observer()
        self.scanned: dict[Path, float] = {}  # wall-clock time of each inbox's last successful scan
        self.writers = Writers()
        # While the daemon is short of descriptors or memory: the reason (one daemon.resources per spell).
        self.short_of: str | None = None
        self._shortage: tuple[OSError, dict] | None = None  # the first one met during this look
        self.zone = schedule.local_zone()
        self.outside: frozenset[str] = frozenset()  # scheduled inboxes outside their windows
        self.schedule_due = float("inf")  # when the next window of any inbox opens or closes (monotonic)
        self.served: dict[Path, int] = {}  # when each inbox last had a file claimed (a count of claims)
        self.claims = 0

    def start(self) -> None:
        self.observer.start()
        # Scheduled only now, when the inotify descriptor exists (an inbox not there yet is no error).
        for w in self.watchers.values():
            self._schedule(w)

    def stop(self) -> None:
        if self.observer.is_alive():
            self.observer.stop()
            self.observer.join(timeout=OBSERVER_JOIN)

    def healthy(self) -> bool:
        return not any(w.mode == "events" for w in self.watchers.values()) or self.observer.is_alive()

    def add(self, inbox: Inbox, config: Config) -> None:
        """Watch `inbox`, its folders made first where they are missing."""
        _make_folders(inbox)
        w = InboxWatcher(
            inbox, config.settle(inbox), config.defaults.poll_interval, self.wake, config.defaults.rescan_interval
        )
        self.watchers[inbox.path] = w
        self.schedule_due = 0.0  # its schedule is looked at in the next iteration
        if self.observer.is_alive():  # else start() schedules it
            self._schedule(w)
        log.info("inbox.watching", inbox=str(inbox.path), job=inbox.job, mode=w.mode, settle=w.settle)

    def remove(self, path: Path) -> None:
        w = self.watchers.pop(path)
        self.schedule_due = 0.0
        self._unschedule(w)
        log.info("inbox.removed", inbox=str(path))

    def _schedule(self, w: InboxWatcher) -> None:
        if w.mode != "events":
            return
        self._unschedule(w)
        try:
            w.watch = self.observer.schedule(EventHint(w, self.clock), str(w.inbox.path))
        except OSError:
            w.watch = None  # not there now: the scans carry on, and it is scheduled when it comes back

    def _unschedule(self, w: InboxWatcher) -> None:
        if w.watch is not None:
            try:
                self.observer.unschedule(w.watch)
            except OSError:
                pass  # the kernel dropped it already (the folder went)
            w.watch = None

    def states(self) -> dict[str, tuple[bool, float | None]]:
        """Each inbox: (available, wall-clock time of its last successful scan)."""
        return {str(p): (w.available is not False, self.scanned.get(p)) for p, w in self.watchers.items()}

    def next_due(self) -> float:
        return min([*(w.next_scan for w in self.watchers.values()), self.schedule_due])

    def scheduled(self, now: float, wall: datetime) -> frozenset[str]:
        """The inboxes outside their schedule windows at `wall` (an aware time), logging each that opened or closed.

        Worked out again only when a window opens or closes (the loop is woken then: `schedule_due`),
        an inbox is added or removed, or SCHEDULE_RECHECK has passed (the wall clock may have been set).
        """
        if now < self.schedule_due:
            return self.outside
        outside, due = set(), float("inf")
        for path, w in self.watchers.items():
            windows = w.inbox.windows()
            if windows is None:
                continue
            change = schedule.next_change(windows, wall, self.zone)
            if change is not None:
                due = min(due, now + max((change - wall).total_seconds(), 0.0), now + SCHEDULE_RECHECK)
            if not schedule.is_open(windows, wall, self.zone):
                outside.add(str(path))
        for name in sorted(outside - self.outside):
            opens = schedule.next_open(self.watchers[Path(name)].inbox.windows() or (), wall, self.zone)
            log.info("inbox.schedule_closed", inbox=name, opens=self._local(opens))
        for name in sorted(self.outside - outside):
            if Path(name) in self.watchers:
                log.info("inbox.schedule_opened", inbox=name)
                self.watchers[Path(name)].hint()  # its settled files are offered at once
        self.outside, self.schedule_due = frozenset(outside), due
        return self.outside

    def _local(self, when: datetime | None) -> str | None:
        return None if when is None else when.astimezone(self.zone).isoformat(timespec="minutes")

    def hint(self) -> None:
        """Look at every inbox at the next iteration (a run finished: a slot is free)."""
        for w in self.watchers.values():
            w.hint()

    def look(
        self, now: float, capacity: int, paused: frozenset[str] = frozenset()
    ) -> tuple[list[Claimed], list[Change]]:
        """Scan the inboxes that are due and claim up to `capacity` settled files, in order (contract §11).

        Higher priorities first; equal ones take turns; each inbox's files in its `order`.

        A paused inbox is scanned (its files keep settling, so a resume claims at once) and claims nothing.
        """
        settled: list[Settled] = []
        changes: list[Change] = []
        self._shortage, looked = None, False
        for w in list(self.watchers.values()):
            if not w.due(now):
                continue
            try:
                limit = 0 if str(w.inbox.path) in paused else max(capacity, 0)
                scan = w.scan(now, limit=limit)  # only as many settled files are stat'ed as can be taken
            except OSError as exc:
                if not short_of_resources(exc):
                    raise
                self._short(exc, where="inbox scan", inbox=str(w.inbox.path))  # the inbox keeps its state
                continue
            looked = True
            if scan.available:
                self.scanned[w.inbox.path] = time.time()
            change = self._availability(w, scan)
            if change is not None:
                changes.append(change)
            for name, reason in scan.ignored:
                self._ignored(w, name, reason)
            for name in scan.waiting:  # contract §12: a sidecar is never claimed alone
                log.info("file.sidecar_waiting", inbox=str(w.inbox.path), file=name)
            settled += [(now, w, name, None) for name in scan.symlinks]
            settled += [(w.changed_at(name), w, name, st) for name, st in scan.settled]
        claimed = self._claim_settled(settled, now, capacity)
        self._resources(looked)
        return claimed, changes

    def _short(self, exc: OSError, **fields) -> None:
        if self._shortage is None:
            self._shortage = (exc, fields)

    def _resources(self, looked: bool) -> None:
        """Log the start of a shortage of descriptors or memory, and its end (a look that met none)."""
        if self._shortage is not None:
            exc, fields = self._shortage
            if self.short_of is None:
                log.error("daemon.resources", **fields, **resources_fields(exc))
            self.short_of = exc.strerror or str(exc)
        elif looked and self.short_of is not None:
            log.info("daemon.resources_recovered", reason=self.short_of)
            self.short_of = None

    def _claim_settled(self, settled: list[Settled], now: float, capacity: int) -> list[Claimed]:
        if not settled or capacity <= 0:
            return []
        groups: dict[tuple[Path, str], tuple[tuple[str, ...], frozenset[tuple[int, int]]]] = {}
        for _, w, name, st in settled:
            if st is not None and w.stems is not None:
                group = grouping.settled_group(w, name, now)
                if group is not None:
                    groups[(w.inbox.path, name)] = group
        # A stem's main file waiting out its sidecar_wait is held by its watcher: not claimed now.
        settled = [s for s in settled if s[3] is None or s[1].stems is None or (s[1].inbox.path, s[2]) in groups]
        candidates = set().union(*(folders.keys(st) for *_, st in settled if st is not None))
        candidates |= set().union(*(keys for _, keys in groups.values()))
        try:
            busy = self.writers.busy(candidates, now)
        except OSError as exc:
            if not short_of_resources(exc):
                raise
            # Whether a writer still has them open is unknown: none is claimed; they are offered again.
            self._short(exc, where="open-writer check")
            return []
        made: list[Claimed] = []
        for _, w, name, st in self._ordered(settled):
            if len(made) >= capacity:
                break  # the rest stays settled: claimed when a run finishes and the loop looks again
            sidecars, keys = groups.get((w.inbox.path, name), ((), frozenset()))
            if st is not None and (folders.keys(st) | keys) & busy:
                w.wait_longer(name, now)
                log.debug("file.still_open", inbox=str(w.inbox.path), file=name)
                continue
            got = self._claim(w, name, st is None, sidecars, _poison(st))
            if got is not None:
                made.append(got)
                self.claims += 1
                self.served[w.inbox.path] = self.claims
        return made

    def _ordered(self, settled: list[Settled]) -> list[Settled]:
        """Symlinks first (quarantined at once); then by priority, inboxes taking turns, each in its order."""
        groups: dict[Path, list[Settled]] = {}
        for item in settled:
            groups.setdefault(item[1].inbox.path, []).append(item)
        for items in groups.values():
            w = items[0][1]
            rank = {n: i for i, n in enumerate(w.files.ranked(n for _, _, n, st in items if st is not None))}
            items.sort(key=lambda x: -1 if x[3] is None else rank[x[2]])
        return ordering.interleave(
            ((path, items[0][1].inbox.priority, items) for path, items in groups.items()), self.served
        )

    def _claim(
        self, w: InboxWatcher, name: str, symlink: bool, sidecars: tuple[str, ...] = (), poison: str | None = None
    ) -> Claimed | None:
        inbox = w.inbox
        try:
            got = claims.claim(inbox.path, name, self.me, inbox.unit if not symlink else "file", sidecars)
        except OSError as exc:
            if short_of_resources(exc):
                self._short(exc, where="claim", inbox=str(inbox.path), file=name)
            else:
                log.warning("file.claim_failed", inbox=str(inbox.path), file=name, reason=exc.strerror or str(exc))
            return None
        for gone in (name, *sidecars):
            w.forget(gone)
        if got is None:
            log.info("file.taken_elsewhere", inbox=str(inbox.path), file=name)
            return None
        return Claimed(inbox, got[0], got[1], name, symlink, poison)

    def _availability(self, w: InboxWatcher, scan) -> Change | None:
        path, was = w.inbox.path, w.available
        w.available = scan.available
        if not scan.available and was is not False:
            log.warning("inbox.unavailable", inbox=str(path), reason=scan.error)
            return Change(path, False, scan.error)
        if scan.available and was is False:
            log.info("inbox.available", inbox=str(path))
            self._schedule(w)
            return Change(path, True)
        return None

    def _ignored(self, w: InboxWatcher, name: str, reason: str) -> None:
        """The watcher reports each ignored name once, until it leaves: log it (not our own .chute)."""
        if name != STATE_DIR:
            log.info("file.ignored", inbox=str(w.inbox.path), file=name, reason=reason)


def _poison(st: os.stat_result | folders.FolderStat | None) -> str | None:
    """Why a settled delivery is refused whole before anything runs: a symlink inside a folder (never followed)."""
    if isinstance(st, folders.FolderStat) and st.link is not None:
        return f"symlink inside the delivery: {st.link}"
    return None
