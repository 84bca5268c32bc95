"""Claims on the shared filesystem: `<inbox>/.chute/claimed/<daemon>/<run_id>/<name>`.

A claim is a folder holding the input. Every change of owner or state is one
rename, so of several daemons racing for it exactly one wins (contract §5). Markers
(files whose names start with a dot) record how far a run got, for recovery.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

from .errors import ClaimLost
from .fileops import GONE_PREFIX, fsync_dir, place, write_atomic
from .leases import STATE_DIR, Identity
from .run import COMMIT_SUFFIX

# Markers of a claim's own; delivery's (.revealing, .quarantining, .archiving) are publish.py's.
RUNNING = ".running"  # a run of this claim has started (a death from now on counts as a crash)
CRASHES = ".crashes"  # how many runs of this file died with their daemon or worker
MODE = ".mode"  # the input's own permission bits while a run holds it read-only (staging.py)
MODES = ".modes"  # the same for every file of a folder delivery: JSON {relative path: octal mode}
DELIVERY = ".delivery"  # a delivery of several files: {"unit": "stem"|"folder", "main": ..., "members": [...]}


def new_run_id() -> str:
    """`20261124T180512Z-3f9a1c`: sortable by time, unique by its random tail."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


def claimed_root(inbox: Path) -> Path:
    return inbox / STATE_DIR / "claimed"


def _state_folder(inbox: Path, folder: Path) -> None:
    """Create `folder` inside `inbox/.chute`, never the inbox itself (FileNotFoundError when it is gone)."""
    (inbox / STATE_DIR).mkdir(exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)


def claim(
    inbox: Path, name: str, me: Identity, unit: str = "file", sidecars: tuple[str, ...] = ()
) -> tuple[str, Path] | None:
    """Rename `inbox/name` into a new claim of ours; None when another daemon was faster.

    A delivery of several files (contract §12) is marked first (`.delivery`), so a crash between
    its renames is finished by whoever takes the claim (`complete`): its main file's (or its
    folder's) rename is the claim, and its sidecars follow.
    """
    run_id = new_run_id()
    folder = claimed_root(inbox) / me.daemon_id / run_id
    _state_folder(inbox, folder.parent)
    folder.mkdir()
    if unit != "file":
        record = {"unit": unit, "main": name if unit == "stem" else None, "members": [name, *sidecars]}
        mark(folder, DELIVERY, json.dumps(record).encode())
    try:
        os.rename(inbox / name, folder / name)
    except FileNotFoundError:
        if (folder / name).exists():  # an NFS retransmit of our own rename
            return run_id, folder
        remove(folder)
        return None
    except OSError:
        remove(folder)
        raise
    complete(folder, inbox)
    fsync_dir(folder)
    fsync_dir(inbox)
    return run_id, folder


def complete(claim_dir: Path, inbox: Path) -> None:
    """Move in the members of a stem claim still in the inbox (its claim stopped between two renames)."""
    record = delivery(claim_dir)
    if record.get("unit") != "stem" or not (claim_dir / str(record.get("main"))).exists():
        return
    if claim_dir.name.endswith(COMMIT_SUFFIX) or marked(claim_dir, RUNNING):
        return  # past its claim: a member missing now was delivered, and a new file of its name is not its
    for name in record.get("members", []):
        if not os.path.lexists(claim_dir / name):
            try:
                os.rename(inbox / name, claim_dir / name)
            except OSError:
                continue  # moved away by its user meanwhile (or not movable): the delivery goes without it


def delivery(claim_dir: Path) -> dict:
    """A claim's `.delivery` record; {} for a claim of one file."""
    try:
        record = json.loads((claim_dir / DELIVERY).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


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
        if marker.startswith(GONE_PREFIX):  # a folder delivery's remains, its whole copy already out
            shutil.rmtree(claim_dir / marker, ignore_errors=True)
        else:
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
    """The input's name inside a claim folder (markers start with a dot, inputs never do): a stem's main file."""
    names = members_of(claim_dir)
    main = delivery(claim_dir).get("main")
    if names and isinstance(main, str):
        return main  # a stem's main file names its delivery, even once it left the claim before its sidecars
    return names[0] if names else None


def members_of(claim_dir: Path) -> list[str]:
    """Every member of the delivery in a claim folder (its files, or its folder), by name; markers left out."""
    try:
        return sorted(p.name for p in claim_dir.iterdir() if not p.name.startswith("."))
    except OSError:
        return []


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
    complete(new, inbox)
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
    """Put a claimed delivery back into its inbox under its original names (or free ones); returns its main.

    Every member goes back (a folder as a folder); the main file last, so a crash in between leaves the
    claim holding its main file, which recovery puts back or runs, never a main file without its sidecars.
    """
    main = input_of(claim_dir)
    if main is None:
        remove(claim_dir)
        return None
    restore_mode(claim_dir, claim_dir / main)
    target = None
    for name in [n for n in members_of(claim_dir) if n != main] + [main]:
        if os.path.lexists(claim_dir / name):
            target = place(claim_dir / name, inbox, name, move=True)
    fsync_dir(inbox)
    remove(claim_dir)
    return target


def restore_mode(claim_dir: Path, path: Path) -> None:
    """Give the input back the permission bits a run took away while it read it (staging's read-only link)."""
    restore_modes(claim_dir)
    try:
        mode = int((claim_dir / MODE).read_text(), 8)
    except (OSError, ValueError):
        return
    with contextlib.suppress(FileNotFoundError):  # it left the claim already (delivered): nothing to give back
        os.chmod(path, mode)
    (claim_dir / MODE).unlink(missing_ok=True)


def restore_modes(claim_dir: Path) -> None:
    """Give every file of a folder delivery back its permission bits (staging's read-only tree of links)."""
    try:
        modes = json.loads((claim_dir / MODES).read_text())
    except (OSError, ValueError):
        return
    for rel, mode in modes.items():
        path = claim_dir / rel
        if not path.is_symlink():  # never followed: a link's target is not the delivery's (Linux has no lchmod)
            with contextlib.suppress(FileNotFoundError):  # gone by its user's own hand: nothing to give back
                os.chmod(path, int(mode, 8))
    (claim_dir / MODES).unlink(missing_ok=True)
