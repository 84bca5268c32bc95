"""Which filesystem an inbox is on, and so how it is watched: inotify events, or polling (contract §5.2)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .config import Inbox

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
