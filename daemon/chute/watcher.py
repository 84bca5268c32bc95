"""Inbox watching: which files have finished arriving (SPEC §5.1, §5.2).

The truth is a periodic scan of each inbox's top level; inotify events (watchdog)
only make the next scan come sooner. A file is settled when its size and mtime
have not changed for `settle` seconds and no local process has it open for writing.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import threading
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

WRITE_GRACE = 600.0  # seconds a write seen by inotify holds a file when its close event never comes
IGNORED_PREFIXES = (".", "~$")
IGNORED_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download")
IGNORED_NAMES = {"thumbs.db", "desktop.ini"}
# proc(5): mountinfo writes space, tab, newline and backslash in paths as \040, \011, \012, \134.
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
# Filesystems where other machines' writes raise no inotify event here.
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs", "lustre",
              "9p", "fuse.sshfs", "fuse.glusterfs", "fuse.ceph", "fuse.s3fs", "gpfs", "beegfs", "ocfs2", "gfs2"}


def ignore_reason(name: str, include: list[str], exclude: list[str]) -> str | None:
    """Why a file name is ignored, or None when it may be claimed."""
    low = name.lower()
    if name.startswith(IGNORED_PREFIXES):
        return "hidden or temporary name"
    if low.endswith(IGNORED_SUFFIXES):
        return "partial download or temporary suffix"
    if low in IGNORED_NAMES:
        return "system file"
    if any(fnmatch.fnmatchcase(low, p.lower()) for p in exclude):
        return "matches exclude"
    if not any(fnmatch.fnmatchcase(low, p.lower()) for p in include):
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


def open_for_writing() -> set[tuple[int, int]]:
    """(device, inode) of every file some local process has open for writing (from /proc)."""
    found: set[tuple[int, int]] = set()
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
                if not stat.S_ISREG(st.st_mode):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    flags = int(f.read().split("flags:")[1].split()[0], 8)
            except (OSError, IndexError, ValueError):
                continue
            if flags & (os.O_WRONLY | os.O_RDWR):
                found.add((st.st_dev, st.st_ino))
    return found


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    changed_at: float


@dataclass
class Scan:
    """What one look at an inbox found."""

    available: bool
    settled: list[tuple[str, os.stat_result]] = field(default_factory=list)
    symlinks: list[str] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None


class InboxWatcher:
    """The state of one inbox between scans: what is settling, and when to look next."""

    def __init__(self, inbox: Inbox, settle: float, poll_interval: float, wake: threading.Event | None = None):
        self.inbox = inbox
        self.wake = wake  # the service's loop, woken by a hint instead of waiting for its tick
        self.settle = settle
        self.poll_interval = poll_interval
        self.mode = watch_mode(inbox)
        self.seen: dict[str, _Seen] = {}
        # Names inotify saw written (IN_MODIFY) and not yet closed (IN_CLOSE_WRITE): a writer
        # /proc cannot show us (smbd as another user under ProtectProc=) still has them open.
        self.writing: dict[str, float] = {}
        self.writing_lock = threading.Lock()
        self.next_scan = 0.0
        self.hinted = threading.Event()
        self.available: bool | None = None
        self.watch = None  # the watchdog ObservedWatch, when events are used

    def hint(self) -> None:
        """Called from the observer thread: something happened, look soon."""
        self.hinted.set()
        if self.wake is not None:
            self.wake.set()

    def due(self, now: float) -> bool:
        return self.hinted.is_set() or now >= self.next_scan

    def scan(self, now: float) -> Scan:
        self.hinted.clear()
        self.next_scan = now + self.poll_interval
        try:
            entries = list(os.scandir(self.inbox.path))
        except OSError as exc:
            # A vanished inbox (an unmounted share) is paused, never read as "all files deleted".
            return Scan(available=False, error=exc.strerror or str(exc))
        result = Scan(available=True)
        present = set()
        for entry in entries:
            self._look(entry, now, result)
            present.add(entry.name)
        for gone in set(self.seen) - present:
            del self.seen[gone]
        with self.writing_lock:
            for gone in set(self.writing) - present:
                del self.writing[gone]
        return result

    def _look(self, entry: os.DirEntry, now: float, result: Scan) -> None:
        name = entry.name
        reason = ignore_reason(name, self.inbox.include, self.inbox.exclude)
        if reason is not None:
            result.ignored.append((name, reason))
            return
        try:
            if entry.is_symlink():
                result.symlinks.append(name)
                return
            if entry.is_dir(follow_symlinks=False):
                result.ignored.append((name, "a folder"))  # SPEC §5.1: folders are not taken
                return
            if not entry.is_file(follow_symlinks=False):
                return  # a FIFO, a socket, a device: nothing to claim
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return
        seen = self.seen.get(name)
        if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self.seen[name] = _Seen(st.st_size, st.st_mtime_ns, now)
            self.next_scan = min(self.next_scan, now + self.settle)
        elif now - seen.changed_at >= self.settle:
            if self._still_writing(name, now):
                self.next_scan = min(self.next_scan, now + max(self.settle, 0.5))
            else:
                result.settled.append((name, st))
        else:
            self.next_scan = min(self.next_scan, seen.changed_at + self.settle)

    def _still_writing(self, name: str, now: float) -> bool:
        with self.writing_lock:
            since = self.writing.get(name)
        # A close event lost to a queue overflow must not hold a file for ever.
        return since is not None and now - since < WRITE_GRACE

    def wrote(self, name: str, now: float) -> None:
        """inotify: `name` was written to; it is open until its close-after-write."""
        with self.writing_lock:
            self.writing[name] = now
        self.touched(name, now)

    def closed(self, name: str, now: float) -> None:
        """inotify: `name` was closed after writing (or renamed, or deleted)."""
        with self.writing_lock:
            self.writing.pop(name, None)
        self.touched(name, now)

    def touched(self, name: str, now: float) -> None:
        """An event for `name`: it is still changing (or just closed); its settle time starts again."""
        seen = self.seen.get(name)
        if seen is not None:
            seen.changed_at = now
        self.hint()

    def wait_longer(self, name: str, now: float) -> None:
        """Still open for writing: look again in a while."""
        seen = self.seen.get(name)
        if seen is not None:
            seen.changed_at = now
        self.next_scan = min(self.next_scan, now + max(self.settle, 0.5))

    def forget(self, name: str) -> None:
        self.seen.pop(name, None)
        with self.writing_lock:
            self.writing.pop(name, None)


class EventHint(FileSystemEventHandler):
    """Feeds inotify events of one inbox to its watcher, from watchdog's observer thread."""

    def __init__(self, watcher: InboxWatcher, clock):
        self.watcher, self.clock = watcher, clock

    def on_any_event(self, event: FileSystemEvent) -> None:
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if not path or os.path.dirname(os.fsdecode(path)) != str(self.watcher.inbox.path):
                continue
            name, now = os.path.basename(os.fsdecode(path)), self.clock()
            if event.is_directory:
                self.watcher.touched(name, now)
            elif event.event_type == EVENT_TYPE_MODIFIED:
                self.watcher.wrote(name, now)
            elif event.event_type in (EVENT_TYPE_CLOSED, EVENT_TYPE_MOVED, EVENT_TYPE_DELETED):
                self.watcher.closed(name, now)
            else:
                self.watcher.touched(name, now)
