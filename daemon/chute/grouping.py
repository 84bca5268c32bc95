"""`unit: stem`: when a settled main file's group may be claimed (its sidecars quiet for `sidecar_wait`)."""

from __future__ import annotations

import os
import stat

from .stems import stem_of
from .watcher import InboxWatcher


def settled_group(w: InboxWatcher, main: str, now: float) -> tuple[tuple[str, ...], frozenset[tuple[int, int]]] | None:
    """A settled main file's sidecars and their (device, inode), once none has changed for `sidecar_wait`.

    None while the group waits: the main file is held and offered again when the wait is up. A sibling
    the watcher has not listed yet has just appeared: it restarts the wait, and the inbox is listed again.
    """
    assert w.stems is not None
    try:
        names = os.listdir(w.path)
    except OSError:
        w.hold(main, now + max(w.settle, w.inbox.sidecar_wait))  # the inbox's own scan says what became of it
        return None
    unseen = [n for n in names if n not in w.files.seen and n.startswith(stem_of(main) + ".")]
    sidecars = w.stems.sidecars(main, [*w.files.seen, *unseen])
    latest = now if unseen else w.changed_at(main) + w.settle
    if unseen:
        w.rescan()
    keys = set()
    for name in sidecars:
        c = w.files.seen.get(name)
        if c is not None and c.kind != stat.S_IFREG:
            continue  # a folder or a symlink of that stem is never a member
        try:
            st = os.lstat(f"{w.path}/{name}")
        except OSError:
            st = None  # it went meanwhile: the next listing says so
        if c is None or st is None or (st.st_size, st.st_mtime_ns) != (c.size, c.mtime_ns):
            w.files.changed(name, now)
            w.rescan()  # its new size is taken in at the listing
            latest = now
            continue
        latest = max(latest, c.changed_at)
        if stat.S_ISREG(st.st_mode):
            keys.add((st.st_dev, st.st_ino))
    due = latest + w.inbox.sidecar_wait
    if now < due:
        w.hold(main, due)
        return None
    return tuple(sidecars), frozenset(keys)
