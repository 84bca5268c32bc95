"""What inotify reported about one inbox's names, between two looks of its watcher (watcher.py)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol

from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, WatchDescriptor


class Hinted(Protocol):
    """What EventHint tells: an inbox's watcher (watcher.InboxWatcher)."""

    def rescan(self) -> None: ...
    def wrote(self, name: str, now: float) -> None: ...
    def closed(self, name: str, now: float) -> None: ...
    def touched(self, name: str, now: float) -> None: ...


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


class EventHint:
    """Feeds inotify events of one inbox to its watcher, from the inotify reader thread (inotify.Observer)."""

    def __init__(self, watcher: Hinted, clock: Callable[[], float]):
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
