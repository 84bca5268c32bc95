"""Claims on the shared filesystem: `<inbox>/.chute/claimed/<daemon>/<run_id>/<name>`.

A claim is a folder holding the input. Every change of owner or state is one
rename, so of several daemons racing for it exactly one wins (SPEC §5).
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import ClaimLost
from .fileops import free_name, fsync_dir, rename_noreplace

STATE_DIR = ".chute"
COMMIT_SUFFIX = ".commit"
REVEALING = ".revealing"  # marker: the result folder is complete and being renamed into view
QUARANTINING = ".quarantining"  # marker: the input is going into its quarantine folder
ARCHIVING = ".archiving"  # holds where a move across filesystems is putting the input (publish.dispose_input)


def new_run_id() -> str:
    """`20261124T180512Z-3f9a1c`: sortable by time, unique by its random tail."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


def hostname() -> str:
    return socket.gethostname()


def claimed_root(inbox: Path) -> Path:
    return inbox / STATE_DIR / "claimed"


def state_folder(inbox: Path, folder: Path) -> None:
    """Create `folder` inside `inbox/.chute`, but never the inbox itself: FileNotFoundError when it is gone.

    An inbox that vanished (an unmounted share) must stay absent, so its scan reports it
    unavailable rather than finding a fresh empty folder on the mount point.
    """
    (inbox / STATE_DIR).mkdir(exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)


def commit(claim: Path) -> Path:
    """Mark a claim as delivering; ClaimLost when it is no longer ours to deliver."""
    target = claim.with_name(claim.name + COMMIT_SUFFIX)
    try:
        os.rename(claim, target)
    except FileNotFoundError:
        # NFS may retransmit a rename that already happened: then our target exists.
        if target.is_dir():
            return target
        if taken(claim):
            raise ClaimLost(str(claim)) from None
        raise  # the whole inbox is gone (an unmounted share): an outage, delivered when it is back
    fsync_dir(claim.parent)
    return target


def taken(claim: Path) -> bool:
    """Whether a claim of ours is gone while its inbox's claimed folder is there: taken over.

    A claim that vanished with its whole inbox is not taken: it comes back with the share.
    """
    base = claim.parent / claim.name.removesuffix(COMMIT_SUFFIX)
    gone = not base.exists() and not base.with_name(base.name + COMMIT_SUFFIX).exists()
    return gone and claim.parent.parent.is_dir()


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
    for marker in (REVEALING, QUARANTINING, ARCHIVING, RUNNING, CRASHES):
        (claim / marker).unlink(missing_ok=True)
    try:
        claim.rmdir()
    except OSError as exc:
        # Never rmtree a claim: whatever is still in it is a user's file. A folder left
        # here holds no input (it was moved out first); recovery drops it.
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
            raise


# --- who holds claims: daemon identities and their leases ---

RUNNING = ".running"  # marker: a run of this claim has started (a death now counts as a crash)
CRASHES = ".crashes"  # how many runs of this file died with their daemon
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


def start_time(pid: int) -> int | None:
    """When a process started, in clock ticks since boot (/proc/PID/stat field 22): with the pid, names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


@dataclass(frozen=True)
class Identity:
    """This daemon, as other daemons on the share see it."""

    host: str
    boot_id: str
    pid: int
    token: str
    started: int | None = None

    @classmethod
    def mine(cls) -> Identity:
        pid = os.getpid()
        return cls(hostname(), boot_id(), pid, secrets.token_hex(3), start_time(pid))

    @property
    def daemon_id(self) -> str:
        return f"{_SAFE.sub('_', self.host)[:64]}.{self.pid}.{self.token}"


def leases_dir(inbox: Path) -> Path:
    return inbox / STATE_DIR / "leases"


def write_lease(inbox: Path, me: Identity, counter: int) -> None:
    """Rewrite this daemon's lease in `inbox` (write aside, then rename: never half a lease)."""
    folder = leases_dir(inbox)
    state_folder(inbox, folder)
    data = {"daemon": me.daemon_id, "host": me.host, "boot_id": me.boot_id, "pid": me.pid,
            "started": me.started, "counter": counter}
    tmp = folder / f".{me.daemon_id}.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, folder / f"{me.daemon_id}.json")


def read_lease(inbox: Path, daemon_id: str) -> dict | None:
    try:
        return json.loads((leases_dir(inbox) / f"{daemon_id}.json").read_text())
    except (OSError, ValueError):
        return None


def drop_lease(inbox: Path, daemon_id: str) -> None:
    try:
        (leases_dir(inbox) / f"{daemon_id}.json").unlink()
    except OSError:
        pass


def _pid_is_chute(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"chute" in cmdline


def _alive(lease: dict) -> bool:
    pid = int(lease.get("pid", 0))
    if lease.get("started") is not None:
        return start_time(pid) == lease["started"]  # a reused pid has another start time
    return _pid_is_chute(pid)


def dead_on_this_host(me: Identity, daemon_id: str, lease: dict | None) -> bool | None:
    """For a daemon of this host: whether it is gone. None when it is another host's."""
    if lease is not None:
        if lease.get("host") != me.host:
            return None
        return lease.get("boot_id") != me.boot_id or not _alive(lease)
    parts = daemon_id.split(".")
    if len(parts) < 3 or parts[0] != _SAFE.sub("_", me.host)[:64]:
        return None
    return not _pid_is_chute(int(parts[-2])) if parts[-2].isdigit() else True


class LeaseClock:
    """Judges other hosts' daemons by whether their lease changes, on our own monotonic clock."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.seen: dict[tuple[str, str], tuple[object, float]] = {}

    def stale(self, inbox: Path, daemon_id: str, lease: dict | None, now: float) -> bool:
        key = (str(inbox), daemon_id)
        content = None if lease is None else lease.get("counter")
        last = self.seen.get(key)
        if last is None or last[0] != content:
            self.seen[key] = (content, now)
            return False
        return now - last[1] >= self.timeout


def owners(inbox: Path) -> list[str]:
    root = claimed_root(inbox)
    try:
        return sorted(p.name for p in root.iterdir() if p.is_dir())
    except OSError:
        return []


def claims_of(inbox: Path, daemon_id: str) -> list[Path]:
    try:
        return sorted(p for p in (claimed_root(inbox) / daemon_id).iterdir() if p.is_dir())
    except OSError:
        return []


def input_of(claim: Path) -> str | None:
    """The input's name inside a claim folder (markers start with a dot, inputs never do)."""
    try:
        names = [p.name for p in claim.iterdir() if not p.name.startswith(".")]
    except OSError:
        return None
    return names[0] if names else None


def run_id_of(claim: Path) -> str:
    name = claim.name
    return name[: -len(COMMIT_SUFFIX)] if name.endswith(COMMIT_SUFFIX) else name


def claim(inbox: Path, name: str, me: Identity) -> tuple[str, Path] | None:
    """Rename `inbox/name` into a new claim of ours; None when another daemon was faster."""
    run_id = new_run_id()
    folder = claimed_root(inbox) / me.daemon_id / run_id
    state_folder(inbox, folder.parent)
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


def take_over(old: Path, inbox: Path, me: Identity) -> Path | None:
    """Move a dead daemon's claim into ours (one rename: one winner). Counts a crash if its run had started."""
    mine = claimed_root(inbox) / me.daemon_id
    mine.mkdir(parents=True, exist_ok=True)
    new = mine / old.name
    try:
        os.rename(old, new)
    except FileNotFoundError:
        return None
    if (new / RUNNING).exists():
        count = crashes(new) + 1
        tmp = new / f"{CRASHES}.tmp"
        tmp.write_text(str(count))
        os.replace(tmp, new / CRASHES)  # a kill mid-write must not reset the count
        (new / RUNNING).unlink()
    fsync_dir(new)
    return new


def crashes(claim: Path) -> int:
    try:
        return int((claim / CRASHES).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def release(claim: Path, inbox: Path) -> Path | None:
    """Put a claimed input back into its inbox under its original name (or a free one)."""
    name = input_of(claim)
    if name is None:
        remove(claim)
        return None
    while True:
        target = free_name(inbox, name)
        try:
            rename_noreplace(claim / name, target)
            break
        except FileExistsError:
            continue
    fsync_dir(inbox)
    for marker in (RUNNING, CRASHES):
        (claim / marker).unlink(missing_ok=True)
    remove(claim)
    return target
