"""Who holds claims: daemon identities and the leases they rewrite while alive (contract §5).

A lease is `<inbox>/.chute/leases/<daemon>.json`. Another daemon takes over a
claim only when its owner is known dead on this host, or when its lease has not
changed for `lease_timeout` on the judge's own monotonic clock: two hosts'
clocks are never compared.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from . import procs
from .fileops import write_atomic

STATE_DIR = ".chute"
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
COUNTER_WIDTH = 20  # a lease's counter, padded with spaces: every rewrite of a lease is the same length


def hostname() -> str:
    return socket.gethostname()


def start_time(pid: int) -> int | None:
    """When a process started (procs.start_time): with the pid, names one process; None when it is gone."""
    try:
        return procs.start_time(pid)
    except OSError:  # gone, or /proc hides it: no start time to compare with
        return None


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


@dataclass(frozen=True)
class Identity:
    """A daemon (or a `chute submit`), as others see it: host, boot, pid and the pid's start time."""

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

    def record(self, **extra) -> dict:
        return {
            "daemon": self.daemon_id,
            "host": self.host,
            "boot_id": self.boot_id,
            "pid": self.pid,
            "started": self.started,
            **extra,
        }


def leases_dir(inbox: Path) -> Path:
    return inbox / STATE_DIR / "leases"


def lease_data(me: Identity, counter: int) -> bytes:
    """This daemon's lease: its record as JSON, the counter last and padded, so every rewrite is the same length."""
    head = json.dumps(me.record(counter=0))[: -len("0}")]
    return f"{head}{counter:<{COUNTER_WIDTH}d}}}".encode()


def write_lease(inbox: Path, me: Identity, counter: int) -> None:
    """Rewrite this daemon's lease in `inbox`; FileNotFoundError when the inbox itself is gone.

    The inbox is never created here: a vanished share must stay absent, so its scan
    reports it unavailable rather than finding a fresh empty folder on the mount point.
    """
    folder = leases_dir(inbox)
    lease, data = folder / f"{me.daemon_id}.json", lease_data(me, counter)
    if _overwrite(lease, data):
        return
    try:
        write_atomic(lease, data, sync=False)
    except FileNotFoundError:
        # Its folders are made only when missing: made at each rewrite, they were two failed mkdirs (issue 21).
        (inbox / STATE_DIR).mkdir(exist_ok=True)
        folder.mkdir(exist_ok=True)
        write_atomic(lease, data, sync=False)


def _overwrite(lease: Path, data: bytes) -> bool:
    """Rewrite our own lease in place (same length: only the counter's digits change); False where it cannot.

    A new file renamed over the old one cost a new inode at each rewrite, ten times the CPU of
    this (issue 21). The path never goes missing. What a peer may read while it is half written
    (or after a crash in the middle) differs from what it read before only in the counter, or
    does not parse: a change, as any rewrite is, so a live daemon never looks stale, and a dead
    one writes nothing that could keep it looking alive (LeaseClock).
    """
    try:
        fd = os.open(lease, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False  # not written yet, or dropped by a peer that took us for dead: made whole by a rename
    try:
        return os.fstat(fd).st_size == len(data) and os.pwrite(fd, data, 0) == len(data)
    except OSError:
        return False  # a rename puts the whole lease back
    finally:
        os.close(fd)


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
        return b"chute" in procs.cmdline(pid)
    except OSError:  # gone (or hidden): not a live chute of ours
        return False


def alive_here(record: dict) -> bool:
    """Whether the process a lease (or workspace owner record) names is alive on this boot of this host."""
    if record.get("boot_id") != boot_id():
        return False
    pid = int(record.get("pid", 0))
    if record.get("started") is not None:
        return start_time(pid) == record["started"]  # a reused pid has another start time
    return _pid_is_chute(pid)


def dead_on_this_host(me: Identity, daemon_id: str, lease: dict | None) -> bool | None:
    """For a daemon of this host: whether it is gone. None when it is another host's."""
    if lease is not None:
        if lease.get("host") != me.host:
            return None
        return not alive_here(lease)
    parts = daemon_id.split(".")
    if len(parts) < 3 or parts[0] != _SAFE.sub("_", me.host)[:64]:
        return None
    return not _pid_is_chute(int(parts[-2])) if parts[-2].isdigit() else True


class LeaseClock:
    """Judges other daemons by whether their lease changes, on our own monotonic clock."""

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

    def forget(self, inbox: Path, daemon_id: str) -> None:
        self.seen.pop((str(inbox), daemon_id), None)
