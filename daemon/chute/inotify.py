"""One inotify descriptor and one reader thread for every inbox watched by events (inotify(7)).

watchdog's Observer runs an emitter thread per watched folder: 500 inboxes were 504
threads, each waking up every second (issue 21). watchdog's `InotifyFD` holds any number
of watches on one descriptor and calls each watch's callback from its one thread, which
blocks in poll(2) until the kernel has events. chute uses it directly, and so also skips
the Observer's move pairing, which held every event behind an IN_MOVED_FROM (each claim
is one) for 0.5 s (gorakhargosh/watchdog#649): chute needs no pairs, a move is a look at
both names (watcher.EventHint).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from watchdog.observers.inotify_c import (
    CallbackId,
    InotifyConstants,
    InotifyFD,
    Mask,
    WatchCallback,
    WatchDescriptor,
)

# What an inbox's watcher uses: writes and closes of the files in it, names coming and going, and the
# folder itself going away (IN_UNMOUNT, IN_IGNORED and IN_Q_OVERFLOW come unasked). Not IN_OPEN nor
# IN_CLOSE_NOWRITE: the watcher's own listings would wake it.
MASK = Mask(
    InotifyConstants.IN_MODIFY
    | InotifyConstants.IN_ATTRIB
    | InotifyConstants.IN_CLOSE_WRITE
    | InotifyConstants.IN_MOVED_FROM
    | InotifyConstants.IN_MOVED_TO
    | InotifyConstants.IN_CREATE
    | InotifyConstants.IN_DELETE
    | InotifyConstants.IN_DELETE_SELF
    | InotifyConstants.IN_MOVE_SELF
    | InotifyConstants.IN_ONLYDIR
)


@dataclass(frozen=True)
class Watch:
    """One folder watched: its watch descriptor and the id of its callback there."""

    wd: WatchDescriptor
    callback: CallbackId


class Observer:
    """The inotify descriptor of the daemon and the thread that reads it, calling each folder's callback."""

    def __init__(self) -> None:
        self._fd: InotifyFD | None = None

    def start(self) -> None:
        """Open the descriptor and start its reader thread."""
        fd = InotifyFD()
        fd.name = "chute-inotify"
        fd.start()
        self._fd = fd

    def schedule(self, callback: WatchCallback, path: str) -> Watch:
        """Watch the folder `path` (not recursively) for `callback`; OSError when it cannot be watched."""
        if self._fd is None:
            raise RuntimeError("the inotify observer is not started")
        cid = CallbackId(id(callback))
        return Watch(self._fd.add_callback(os.fsencode(path), MASK, callback, cid), cid)

    def unschedule(self, watch: Watch) -> None:
        """Stop calling the callback of `watch` (a watch the kernel already dropped is no error)."""
        if self._fd is not None:
            self._fd.remove_callbacks([(watch.wd, watch.callback)])

    def stop(self) -> None:
        if self._fd is not None:
            self._fd.stop()

    def join(self, timeout: float | None = None) -> None:
        if self._fd is not None:
            self._fd.join(timeout)

    def is_alive(self) -> bool:
        return self._fd is not None and self._fd.is_alive()
