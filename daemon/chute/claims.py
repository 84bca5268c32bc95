"""Claims on the shared filesystem: `<inbox>/.chute/claimed/<daemon>/<run_id>/<name>`.

A claim is a folder holding the input. Every change of owner or state is one
rename, so of several daemons racing for it exactly one wins (contract §5). Markers
(files whose names start with a dot) record how far a run got, for recovery.
"""

from __future__ import annotations

import errno
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from .errors import ClaimLost
from .fileops import fsync_dir, place, write_atomic
from .leases import STATE_DIR, Identity
from .run import COMMIT_SUFFIX

# Markers of a claim's own; delivery's (.revealing, .quarantining, .archiving) are publish.py's.
RUNNING = ".running"  # a run of this claim has started (a death from now on counts as a crash)
CRASHES = ".crashes"  # how many runs of this file died with their daemon or worker
MODE = ".mode"  # the input's own permission bits while a run holds it read-only (staging.py)


def new_run_id() -> str:
    """`20261124T180512Z-3f9a1c`: sortable by time, unique by its random tail."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


def claimed_root(inbox: Path) -> Path:
    return inbox / STATE_DIR / "claimed"


def _state_folder(inbox: Path, folder: Path) -> None:
    """Create `folder` inside `inbox/.chute`, never the inbox itself (FileNotFoundError when it is gone)."""
    (inbox / STATE_DIR).mkdir(exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)


def claim(inbox: Path, name: str, me: Identity) -> tuple[str, Path] | None:
    """Rename `inbox/name` into a new claim of ours; None when another daemon was faster."""
    run_id = new_run_id()
    folder = claimed_root(inbox) / me.daemon_id / run_id
    _state_folder(inbox, folder.parent)
    folder.mkdir()
    try:
        os.rename(inbox / name, folder / name)
    except FileNotFoundError:
        if (folder / name).exists():  # an NFS retransmit of our own rename
            return run_id, folder
        folder.rmdir()
        return None
    except OSError:
        folder.rmdir()
        raise
    fsync_dir(folder)
    fsync_dir(inbox)
    return run_id, folder


def committed(claim_dir: Path) -> Path:
    return claim_dir.with_name(run_id_of(claim_dir) + COMMIT_SUFFIX)


def commit(claim_dir: Path) -> Path:
    """Mark a claim as delivering (one rename); ClaimLost when it is no longer ours to deliver."""
    target = committed(claim_dir)
    if claim_dir == target:
        return target
    try:
        os.rename(claim_dir, target)
    except FileNotFoundError:
        # NFS may retransmit a rename that already happened: then our target exists.
        if target.is_dir():
            return target
        if taken(claim_dir):
            raise ClaimLost(str(claim_dir)) from None
        raise  # the whole inbox is gone (an unmounted share): an outage, delivered when it is back
    fsync_dir(claim_dir.parent)
    return target


def uncommit(claim_dir: Path) -> Path:
    """Undo commit() when delivery failed before any result went out: the claim waits for a retry."""
    if not claim_dir.name.endswith(COMMIT_SUFFIX):
        return claim_dir
    back = claim_dir.with_name(run_id_of(claim_dir))
    try:
        os.rename(claim_dir, back)
    except OSError:
        return claim_dir
    return back


def taken(claim_dir: Path) -> bool:
    """Whether a claim of ours is gone while its owner's claimed folder is there: taken over.

    A claim that vanished with its whole inbox is not taken: it comes back with the share.
    """
    base = claim_dir.with_name(run_id_of(claim_dir))
    gone = not base.exists() and not committed(base).exists()
    return gone and claim_dir.parent.parent.is_dir()


def mark(claim_dir: Path, marker: str, content: bytes = b"") -> None:
    """Write a marker file into the claim, durably: recovery reads how far delivery got."""
    if content:
        write_atomic(claim_dir / marker, content)
        return
    # An empty marker is there or not, so it needs no temporary and rename: created in place, it
    # costs one journal commit rather than two (it is written twice in every run).
    fd = os.open(claim_dir / marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(claim_dir)


def marked(claim_dir: Path, marker: str) -> bool:
    return (claim_dir / marker).exists()


def remove(claim_dir: Path) -> None:
    """Drop a delivered claim's folder (the input has already left it)."""
    for marker in _markers(claim_dir):
        (claim_dir / marker).unlink(missing_ok=True)
    try:
        claim_dir.rmdir()
    except OSError as exc:
        # Never rmtree a claim: whatever is still in it is a user's file. A folder left
        # here holds no input (it was moved out first); recovery drops it.
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
            raise


def _markers(claim_dir: Path) -> list[str]:
    try:
        return [n for n in os.listdir(claim_dir) if n.startswith(".")]
    except FileNotFoundError:
        return []


def owners(claimed: str) -> list[str]:
    """The daemons holding claims in an inbox: the folders in its `claimed` folder (claimed_root, as a str).

    Listed at every heartbeat in every inbox: a str and scandir, no Path made (issue 21).
    """
    try:
        with os.scandir(claimed) as entries:
            return sorted(e.name for e in entries if e.is_dir())
    except OSError:
        return []


def claims_of(inbox: Path, daemon_id: str) -> list[Path]:
    try:
        return sorted(p for p in (claimed_root(inbox) / daemon_id).iterdir() if p.is_dir())
    except OSError:
        return []


def input_of(claim_dir: Path) -> str | None:
    """The input's name inside a claim folder (markers start with a dot, inputs never do)."""
    try:
        names = [p.name for p in claim_dir.iterdir() if not p.name.startswith(".")]
    except OSError:
        return None
    return names[0] if names else None


def run_id_of(claim_dir: Path) -> str:
    return claim_dir.name.removesuffix(COMMIT_SUFFIX)


def take_over(old: Path, inbox: Path, me: Identity, charge: bool = True) -> Path | None:
    """Move a dead daemon's claim into ours (one rename: one winner).

    With `charge`, a run that had started counts as a crash of the file (see recovery._charge).
    """
    mine = claimed_root(inbox) / me.daemon_id
    mine.mkdir(parents=True, exist_ok=True)
    new = mine / old.name
    try:
        os.rename(old, new)
    except FileNotFoundError:
        return None
    if marked(new, RUNNING):
        if charge:
            count_crash(new)
        else:
            (new / RUNNING).unlink(missing_ok=True)
    fsync_dir(new)
    return new


def count_crash(claim_dir: Path) -> int:
    """One more run of this file died under it; returns the count (written whole: a kill mid-write keeps it)."""
    count = crashes(claim_dir) + 1
    mark(claim_dir, CRASHES, str(count).encode())
    (claim_dir / RUNNING).unlink(missing_ok=True)
    return count


def crashes(claim_dir: Path) -> int:
    try:
        return int((claim_dir / CRASHES).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def release(claim_dir: Path, inbox: Path) -> Path | None:
    """Put a claimed input back into its inbox under its original name (or a free one)."""
    name = input_of(claim_dir)
    if name is None:
        remove(claim_dir)
        return None
    restore_mode(claim_dir, claim_dir / name)
    target = place(claim_dir / name, inbox, name, move=True)
    fsync_dir(inbox)
    remove(claim_dir)
    return target


def restore_mode(claim_dir: Path, path: Path) -> None:
    """Give the input back the permission bits a run took away while it read it (staging's read-only link)."""
    try:
        mode = int((claim_dir / MODE).read_text(), 8)
    except (OSError, ValueError):
        return
    os.chmod(path, mode)
    (claim_dir / MODE).unlink(missing_ok=True)
