"""Claims on the shared filesystem: `<inbox>/.chute/claimed/<daemon>/<run_id>/<name>`.

A claim is a folder holding the input. Every change of owner or state is one
rename, so of several daemons racing for it exactly one wins (SPEC §5).
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
from datetime import datetime, timezone
from pathlib import Path

from .errors import ClaimLost
from .fileops import fsync_dir

STATE_DIR = ".chute"
COMMIT_SUFFIX = ".commit"
REVEALING = ".revealing"  # marker: the result folder is complete and being renamed into view
QUARANTINING = ".quarantining"  # marker: the input is going into its quarantine folder


def new_run_id() -> str:
    """`20261124T180512Z-3f9a1c`: sortable by time, unique by its random tail."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


def hostname() -> str:
    return socket.gethostname()


def claimed_root(inbox: Path) -> Path:
    return inbox / STATE_DIR / "claimed"


def commit(claim: Path) -> Path:
    """Mark a claim as delivering; ClaimLost when it is no longer ours to deliver."""
    target = claim.with_name(claim.name + COMMIT_SUFFIX)
    try:
        os.rename(claim, target)
    except FileNotFoundError:
        # NFS may retransmit a rename that already happened: then our target exists.
        if target.is_dir():
            return target
        raise ClaimLost(str(claim)) from None
    fsync_dir(claim.parent)
    return target


def uncommit(claim: Path) -> Path:
    """Undo commit() when delivery failed for an outage: the claim waits for a retry."""
    if claim.name.endswith(COMMIT_SUFFIX):
        back = claim.with_name(claim.name[: -len(COMMIT_SUFFIX)])
        try:
            os.rename(claim, back)
            for marker in (REVEALING, QUARANTINING):
                (back / marker).unlink(missing_ok=True)
            return back
        except OSError:
            return claim
    return claim


def mark(claim: Path, marker: str) -> None:
    """Write a marker file into the claim (fsynced): recovery reads how far delivery got."""
    fd = os.open(claim / marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(claim)


def remove(claim: Path) -> None:
    """Drop a delivered claim's folder (the input has already left it)."""
    for marker in (REVEALING, QUARANTINING):
        (claim / marker).unlink(missing_ok=True)
    try:
        claim.rmdir()
    except OSError as exc:
        # Never rmtree a claim: whatever is still in it is a user's file. A folder left
        # here holds no input (it was moved out first); recovery drops it.
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
            raise
