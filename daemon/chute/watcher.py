"""Inbox watching: which files have finished arriving (SPEC §5.1, §5.2).

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

import fnmatch
import heapq
import os
import re
import stat
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)

from .config import Inbox

# A /proc walk for open writers is reused this long (Writers): a file still being written was
# written within its settle time, which inotify or its mtime shows; this only bounds the lag of
# a writer that opened a settled file and has not written yet.
WALK_TTL = 0.25
WRITE_GRACE = 600.0  # seconds a write seen by inotify holds a file when its close event never comes
RESCAN_INTERVAL = 60.0  # seconds between backstop listings in events mode (defaults.rescan_interval)
IGNORED_PREFIXES = (".", "~$")
IGNORED_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download")
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})
# proc(5): mountinfo writes space, tab, newline and backslash in paths as \040, \011, \012, \134.
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
# Filesystems where other machines' writes raise no inotify event here.
NETWORK_FS = {
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ncpfs",
    "afs",
    "ceph",
    "glusterfs",
    "lustre",
    "9p",
    "fuse.sshfs",
    "fuse.glusterfs",
    "fuse.ceph",
    "fuse.s3fs",
    "gpfs",
    "beegfs",
    "ocfs2",
    "gfs2",
}


def _globs(patterns: tuple[str, ...]):
    """One compiled regex for case-insensitive globs (matched against the lowercased name), or None."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p.lower())})" for p in patterns)).match


class NameFilter:
    """Whether an inbox takes a name, decided from the name alone; the patterns are compiled once."""

    def __init__(self, include: list[str], exclude: list[str]):
        self.include = _globs(tuple(include))
        self.exclude = _globs(tuple(exclude))

    def reason(self, name: str) -> str | None:
        """Why `name` is ignored, or None when it may be claimed."""
        if name.startswith(IGNORED_PREFIXES):
            return "hidden or temporary name"
        low = name.lower()
        if low.endswith(IGNORED_SUFFIXES):
            return "partial download or temporary suffix"
        if low in IGNORED_NAMES:
            return "system file"
        if self.exclude is not None and self.exclude(low):
            return "matches exclude"
        if self.include is None or not self.include(low):
            return "does not match include"
        return None


def filesystem_type(path: Path, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the filesystem `path` is on, from the longest matching mount point."""
    try:
        target = os.path.realpath(path)
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return None
    best, fstype = "", None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount = _OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), fields[4])
        if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
            best, fstype = mount, right.split()[0]
    return fstype


def watch_mode(inbox: Inbox, mountinfo: str = "/proc/self/mountinfo") -> str:
    """`events` or `poll`: as configured, or for `auto`, poll where other machines' writes raise no event."""
    if inbox.watch != "auto":
        return inbox.watch
    return "poll" if filesystem_type(inbox.path, mountinfo) in NETWORK_FS else "events"


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
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
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
                found.setdefault((st.st_dev, st.st_ino), []).append((pid, fd))
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


@dataclass(slots=True)
class _Seen:
    size: int
    mtime_ns: int
    changed_at: float
    look_at: float | None = None  # when its pending timer is due
    st: os.stat_result | None = None  # its stat at the last look that found it settled


@dataclass
class Scan:
    """What one look at an inbox found.

    `ignored` holds each ignored name once per appearance: the watcher remembers what it
    reported and forgets a name when it disappears, so a caller logs every entry without
    keeping a set of its own. `settled` is oldest first; a settled file the caller does not
    claim (no capacity) is offered again at the next look that re-checks it.
    """

    available: bool
    settled: list[tuple[str, os.stat_result]] = field(default_factory=list)
    symlinks: list[str] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None


class InboxWatcher:
    """The state of one inbox between looks: the names it holds, what is settling, and when to look next.

    The service's thread calls `scan`, `wait_longer` and `forget`; watchdog's observer
    thread calls `wrote`, `closed`, `touched`, `hint` and `rescan`, which only record what
    happened (under `writing_lock`) and wake the service: `scan` applies it.
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
        self.names: set[str] = set()  # every name judged at the last look: the keys of the four below
        self.skipped: set[str] = set()  # ignored by name (and reported)
        self.others: dict[str, int] = {}  # taken by name, but not regular files: their file type
        self.seen: dict[str, _Seen] = {}  # regular files the inbox takes, in the order they last changed
        self.ready: dict[str, None] = {}  # those settled at their last look and not claimed yet
        self.timers: list[tuple[float, str]] = []  # (when, name): a heap of settle times to look at
        # Names inotify saw written (IN_MODIFY) and not yet closed (IN_CLOSE_WRITE): a writer
        # /proc cannot show us (smbd as another user under ProtectProc=) still has them open.
        self.writing: dict[str, float] = {}
        self.writing_lock = threading.Lock()
        self.events: dict[str, float] = {}  # names inotify reported since the last look: when, last
        self.relist, self.recheck = True, False  # asked for by the observer thread or the service
        self.folder_id: tuple[int, int] | None = None  # the inbox's (device, inode) at the last listing
        self.next_scan = 0.0
        self.next_listing = 0.0
        self.next_recheck = float("inf")
        self.hinted = threading.Event()
        self.available: bool | None = None
        self.watch = None  # the watchdog ObservedWatch, when events are used

    # --- called from the observer thread (and the service) ---

    def _wake(self) -> None:
        self.hinted.set()
        if self.wake is not None:
            self.wake.set()

    def hint(self) -> None:
        """Look again soon at the settled files not claimed yet (a worker is free)."""
        with self.writing_lock:
            self.recheck = True
        self._wake()

    def rescan(self) -> None:
        """List the whole inbox at the next look (events may have been lost)."""
        with self.writing_lock:
            self.relist = True
        self._wake()

    def wrote(self, name: str, now: float) -> None:
        """inotify: `name` was written to; it is open until its close-after-write."""
        with self.writing_lock:
            self.writing[name] = now
            self.events[name] = now
        self._wake()

    def closed(self, name: str, now: float) -> None:
        """inotify: `name` was closed after writing (or renamed, or deleted)."""
        with self.writing_lock:
            self.writing.pop(name, None)
            self.events[name] = now
        self._wake()

    def touched(self, name: str, now: float) -> None:
        """An event for `name`: it is still changing (or just closed); its settle time starts again."""
        with self.writing_lock:
            self.events[name] = now
        self._wake()

    # --- called from the service ---

    def due(self, now: float) -> bool:
        return self.hinted.is_set() or now >= self.next_scan

    def scan(self, now: float, limit: int | None = None) -> Scan:
        """Look at the inbox: list it when a listing is due, else stat only the names that need it.

        Args:
            limit: offer at most this many settled files, the oldest (None: all of them).
        """
        self.hinted.clear()
        with self.writing_lock:
            events, self.events = self.events, {}
            relist, recheck = self.relist or now >= self.next_listing, self.recheck
            self.relist = self.recheck = False
        try:
            folder = os.stat(self.path)
            listed = os.listdir(self.path) if relist else None
        except OSError as exc:
            # A vanished inbox (an unmounted share) is paused, never read as "all files deleted".
            return self._lost(now, exc.strerror or str(exc), now + self.poll_interval)
        first = self.folder_id is None  # the first listing, or the first since the inbox was lost
        if self._replaced(folder, relist):
            return self._lost(now, "the folder was replaced (remounted?)", now)
        result, looked = Scan(available=True), set()
        self._restart(events)
        due = self._due(now)
        if listed is not None:
            self._relisted(listed, now, result, looked)
        else:
            for name in dict.fromkeys([*events, *due]):
                self._look(name, now, result, looked)
        recheck = recheck or now >= self.next_recheck
        if recheck:
            self._recheck(now, result, looked, limit)
        result.settled = self._offer(looked, limit)
        self._plan(now, relist, recheck or relist, first)
        return result

    def wait_longer(self, name: str, now: float) -> None:
        """Still open for writing: look again in a while."""
        seen = self.seen.get(name)
        if seen is not None:
            self._changed(name, seen, now)
            self._timer(name, now + max(self.settle, 0.5))
        self.next_scan = min(self.next_scan, now + max(self.settle, 0.5))

    def forget(self, name: str) -> None:
        """`name` left the inbox (claimed): a file of that name appearing later is new."""
        self._gone(name)

    # --- one look ---

    def _lost(self, now: float, error: str, retry_at: float) -> Scan:
        with self.writing_lock:
            self.relist = True  # when it is back, list it: anything may have changed meanwhile
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
        for name in self.names - present:
            self._gone(name)
        known = [*self.others, *self.seen]
        for name in present - self.names:
            self._look(name, now, result, looked)
        for name in known:
            self._look(name, now, result, looked)

    def _recheck(self, now: float, result: Scan, looked: set[str], limit: int | None) -> None:
        """Stat again the settled files not claimed yet, oldest first, until `limit` are still settled."""
        for name in list(self.ready):
            if limit is not None and len(looked) >= limit:
                break
            if name not in looked:
                self._look(name, now, result, looked)

    def _look(self, name: str, now: float, result: Scan, looked: set[str]) -> None:
        """Judge one name: by name first (never a stat for an ignored one), then by what lstat says it is."""
        if name in self.skipped:
            return
        if name not in self.names:
            reason = self.filter.reason(name)
            if reason is not None:
                self.names.add(name)
                self.skipped.add(name)
                result.ignored.append((name, reason))
                return
        try:
            st = os.lstat(f"{self.path}/{name}")
        except FileNotFoundError:
            self._gone(name)
            return
        except OSError:
            return  # judged again at the next listing
        self.names.add(name)
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFREG:
            self.others.pop(name, None)
            self._settle(name, st, now, looked)
            return
        self._drop(name)
        if kind == stat.S_IFLNK:
            result.symlinks.append(name)  # at every look: the service quarantines it, again if that failed
        elif kind == stat.S_IFDIR and self.others.get(name) != kind:
            result.ignored.append((name, "a folder"))  # SPEC §5.1: folders are not taken
        self.others[name] = kind  # a FIFO, a socket, a device: nothing to claim

    def _settle(self, name: str, st: os.stat_result, now: float, looked: set[str]) -> None:
        seen = self.seen.get(name)
        if seen is None or seen.size != st.st_size or seen.mtime_ns != st.st_mtime_ns:
            self.seen.pop(name, None)
            self.seen[name] = seen = _Seen(st.st_size, st.st_mtime_ns, now)
            self.ready.pop(name, None)
            self._timer(name, now + self.settle)
        elif now - seen.changed_at < self.settle:
            self._timer(name, seen.changed_at + self.settle)
        elif self._still_writing(name, now):
            self.ready.pop(name, None)
            self._timer(name, now + max(self.settle, 0.5))
        else:
            seen.look_at = None
            self.ready[name] = None
            looked.add(name)
            seen.st = st

    def _still_writing(self, name: str, now: float) -> bool:
        with self.writing_lock:
            since = self.writing.get(name)
        # A close event lost to a queue overflow must not hold a file for ever.
        return since is not None and now - since < WRITE_GRACE

    # --- bookkeeping ---

    def _restart(self, events: dict[str, float]) -> None:
        """inotify named these files: their settle time starts again at the event."""
        for name, when in events.items():
            seen = self.seen.get(name)
            if seen is not None and when > seen.changed_at:
                self._changed(name, seen, when)

    def _changed(self, name: str, seen: _Seen, when: float) -> None:
        seen.changed_at = when
        self.seen[name] = self.seen.pop(name)  # to the end: `seen` stays in the order files last changed
        self.ready.pop(name, None)

    def _timer(self, name: str, when: float) -> None:
        seen = self.seen[name]
        if seen.look_at != when:
            seen.look_at = when
            heapq.heappush(self.timers, (when, name))

    def _due(self, now: float) -> list[str]:
        """Names whose settle time is up (entries of files that changed again or left are dropped)."""
        due = []
        while self.timers and self.timers[0][0] <= now:
            when, name = heapq.heappop(self.timers)
            if not self._stale(when, name):
                self.seen[name].look_at = None
                due.append(name)
        return due

    def _stale(self, when: float, name: str) -> bool:
        seen = self.seen.get(name)
        return seen is None or seen.look_at != when

    def _offer(self, looked: set[str], limit: int | None) -> list[tuple[str, os.stat_result]]:
        names = sorted((n for n in looked if n in self.ready), key=lambda n: self.seen[n].changed_at)
        return [(n, self.seen[n].st) for n in names[:limit]]

    def _plan(self, now: float, relisted: bool, rechecked: bool, first: bool) -> None:
        """When to look next: the next listing, the next settle time, or a re-offer of unclaimed files."""
        if relisted:
            # After the first listing (at start, or the inbox back from an outage), a second one a
            # poll later catches what was dropped before the service's new inotify watch was in place.
            events = self.mode == "events" and self.watch is not None and not first
            self.next_listing = now + (self.rescan_interval if events else self.poll_interval)
        if not self.ready:
            self.next_recheck = float("inf")
        elif rechecked or self.next_recheck == float("inf"):
            self.next_recheck = now + self.poll_interval
        while self.timers and self._stale(*self.timers[0]):
            heapq.heappop(self.timers)  # changed again or left the inbox: not a reason to wake up
        self.next_scan = min(self.next_listing, self.next_recheck, self.timers[0][0] if self.timers else float("inf"))

    def _drop(self, name: str) -> None:
        self.seen.pop(name, None)
        self.ready.pop(name, None)

    def _gone(self, name: str) -> None:
        self.names.discard(name)
        self.skipped.discard(name)
        self.others.pop(name, None)
        self._drop(name)
        with self.writing_lock:
            self.writing.pop(name, None)


class EventHint(FileSystemEventHandler):
    """Feeds inotify events of one inbox to its watcher, from watchdog's observer thread."""

    def __init__(self, watcher: InboxWatcher, clock):
        self.watcher, self.clock = watcher, clock
        self.folder = watcher.path

    def on_any_event(self, event: FileSystemEvent) -> None:
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if not path:
                continue
            parent, name = os.path.split(os.fsdecode(path))
            if parent != self.folder:
                if os.fsdecode(path) == self.folder and event.event_type in (EVENT_TYPE_DELETED, EVENT_TYPE_MOVED):
                    self.watcher.rescan()  # the inbox itself went: the next listing finds out
                continue
            now = self.clock()
            if event.is_directory:
                self.watcher.touched(name, now)
            elif event.event_type == EVENT_TYPE_MODIFIED:
                self.watcher.wrote(name, now)
            elif event.event_type in (EVENT_TYPE_CLOSED, EVENT_TYPE_MOVED, EVENT_TYPE_DELETED):
                self.watcher.closed(name, now)
            else:
                self.watcher.touched(name, now)
