"""Containment of the pool workers in cgroups (v2): nothing a module starts outlives its worker or its daemon.

A process that double-forks, calls setsid, ignores SIGTERM and execs with an empty
environment escapes the process group, the session and the CHUTE_OWNER marker, and
when its worker dies it is reparented to init. Its cgroup is the one thing it cannot
leave, and the kernel keeps a cgroup after the daemon that made it is gone. So each
pool worker runs in `<base>/<daemon>/w<pid>`; a worker's death kills its cgroup, a
clean stop removes them, and a starting daemon kills and removes the cgroups of dead
daemons (`sweep_dead`). `<base>` is the unit's own cgroup under systemd with
`Delegate=yes`, else `<cgroup2 mount>/chute` when this process may write there (root).

Where neither is possible the mode is `unit` (systemd's unit cgroup, without
delegation: the daemon's death or stop still takes everything; a worker's death
only what carries the marker) or `marker` (only what carries the marker).

Error policy, for every call to the kernel here: an OSError never reaches the
caller. At start it chooses a weaker mode (with its reason); later it is logged as
`cgroup.error` and the marker sweeps remain.
"""

from __future__ import annotations

import enum
import os
import select
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from . import logs
from .leases import Identity, alive_here, boot_id

log = logs.get("chute.cgroups")
ROOT = "chute"  # <cgroup2 mount>/chute: the daemons' cgroups when no systemd unit delegates one
EMPTY_TIMEOUT = 10.0  # seconds a killed cgroup may take to empty (SIGKILL'd processes in uninterruptible I/O)


class Mode(enum.Enum):
    CGROUP = "cgroup"  # our own cgroups: nothing outlives its worker, or its daemon's successor
    UNIT = "unit"  # systemd's unit cgroup without Delegate=: the unit's stop takes everything
    MARKER = "marker"  # only processes that keep the CHUTE_OWNER / CHUTE_RUN_ID marker are found


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host)."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields, _, fs = line.partition(" - ")
        if fs.split(" ", 1)[0] == "cgroup2":
            return Path(fields.split()[4])
    return None


def own_cgroup(mount: Path) -> Path | None:
    """This process's cgroup v2 folder (the `0::` line of /proc/self/cgroup)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return mount / line[3:].strip().lstrip("/")
    return None


def _delegated(folder: Path) -> bool:
    """Whether systemd delegated `folder` to this unit (Delegate=yes): its xattr, or its owner for User=."""
    for name in ("trusted.delegate", "user.delegate"):
        try:
            if os.getxattr(folder, name) == b"1":
                return True
        except OSError:
            continue
    try:
        return os.geteuid() != 0 and folder.stat().st_uid == os.geteuid()
    except OSError:
        return False


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def name_of(me: Identity) -> str:
    """A daemon's cgroup name: its id, its start time and its pid namespace, enough to tell later whether it lives."""
    return f"{me.daemon_id}.{me.started if me.started is not None else 'x'}.{_pid_namespace()}"


def _dead(name: str, me: Identity) -> bool:
    """Whether the daemon a cgroup is named for (name_of) is gone. Never judges one of another host or pid namespace."""
    parts = name.split(".")
    if len(parts) != 5 or not parts[1].isdigit():
        return False
    host, pid, _token, started, pidns = parts
    if host != me.daemon_id.split(".")[0] or pidns != str(_pid_namespace()):
        return False  # a container's daemon beside us: its pids are not ours to read
    return not alive_here(
        {"boot_id": boot_id(), "pid": int(pid), "started": int(started) if started.isdigit() else None}
    )


def _error(action: str, folder: Path, exc: OSError) -> None:
    log.warning("cgroup.error", action=action, cgroup=str(folder), reason=exc.strerror or str(exc))


def _populated(folder: Path) -> bool:
    try:
        return "populated 1" in (folder / "cgroup.events").read_text()
    except FileNotFoundError:
        return False


def _wait_empty(folder: Path, timeout: float) -> bool:
    """Wait until no process is left in `folder` or below, on the kernel's notice (cgroup.events changes)."""
    deadline = time.monotonic() + timeout
    with open(folder / "cgroup.events", "rb", buffering=0) as events:
        poller = select.poll()
        poller.register(events, select.POLLPRI | select.POLLERR)
        while True:
            events.seek(0)
            if b"populated 0" in events.read():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poller.poll(min(left, 0.1) * 1000)  # a short cap: a wake-up missed between read and poll costs 0.1 s


def _pids(folder: Path) -> list[int]:
    found = []
    for path, _dirs, _files in os.walk(folder):
        try:
            found += [int(p) for p in Path(path, "cgroup.procs").read_text().split()]
        except OSError:
            continue
    return found


def kill(folder: Path) -> int:
    """SIGKILL every process in `folder` and below, wait until it is empty, remove it; returns how many there were.

    cgroup.kill (Linux 5.14) kills the whole subtree at once, forks included; before it,
    rounds of SIGKILL over cgroup.procs until the cgroup empties.
    """
    if not folder.is_dir():
        return 0
    killed = len(_pids(folder))
    try:
        if (folder / "cgroup.kill").exists():
            (folder / "cgroup.kill").write_text("1")
        deadline = time.monotonic() + EMPTY_TIMEOUT
        while _populated(folder) and time.monotonic() < deadline:
            for pid in _pids(folder):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _wait_empty(folder, 0.5)
        for path, _dirs, _files in sorted(os.walk(folder), key=lambda w: -len(w[0])):
            os.rmdir(path)  # deepest first: a cgroup with children cannot be removed
    except FileNotFoundError:
        pass  # removed meanwhile by another kill of the same cgroup (a stop racing a worker's death)
    except OSError as exc:
        _error("kill", folder, exc)
    return killed


def sweep_dead(base: Path, me: Identity) -> list[tuple[Path, int]]:
    """Kill and remove the cgroups of daemons of this host that are gone; returns each with how many it held."""
    try:
        folders = [p for p in base.iterdir() if p.is_dir()]
    except OSError:
        return []
    return [(folder, kill(folder)) for folder in folders if _dead(folder.name, me)]


@dataclass
class Containment:
    """Where this daemon's pool workers run, and how what they leave is found."""

    mode: Mode
    reason: str
    own: Path | None = None  # <base>/<daemon>: every worker's cgroup is in it

    @classmethod
    def probe(cls, me: Identity) -> Containment:
        """The strongest containment this host allows this process (see the module's docstring)."""
        mount = cgroup2_mount()
        under_systemd = "INVOCATION_ID" in os.environ
        if mount is None:
            return cls(Mode.UNIT if under_systemd else Mode.MARKER, "no cgroup v2 hierarchy is mounted")
        current = own_cgroup(mount)
        if under_systemd:
            if current is None or not _delegated(current):
                return cls(Mode.UNIT, "the systemd unit does not delegate its cgroup (Delegate=yes)")
            base = current
        else:
            base = mount / ROOT
        try:
            base.mkdir(exist_ok=True)
            own = base / name_of(me)
            own.mkdir()
        except OSError as exc:
            return cls(Mode.MARKER, f"cannot create a cgroup in {base}: {exc.strerror or exc}")
        for folder, count in sweep_dead(base, me):
            log.info("cgroup.removed", cgroup=str(folder), processes=count)
        return cls(Mode.CGROUP, f"cgroups in {base}", own)

    def adopt(self, pid: int) -> Path | None:
        """Move a new worker (before it starts anything) into a cgroup of its own; None where there is none."""
        if self.own is None:
            return None
        folder = self.own / f"w{pid}"
        try:
            folder.mkdir()
            (folder / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            _error("adopt", folder, exc)
            return None
        return folder

    def downgrade(self, reason: str) -> None:
        """A worker could not be moved in at start: say the weaker guarantee rather than a false one."""
        if self.own is not None:
            kill(self.own)
        self.mode, self.reason, self.own = Mode.MARKER, reason, None

    def close(self) -> None:
        """Kill what is left in this daemon's cgroups and remove them (a clean stop)."""
        if self.own is not None:
            kill(self.own)
