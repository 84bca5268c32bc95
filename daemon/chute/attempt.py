"""One attempt of one entry: where its process comes from, how far it got, its clean slate, what its end means.

The step engine (pipeline.py) supervises attempts; what it decides about one (its
declared outputs, whose fault a failure is) is a plain function of its values here.
"""

from __future__ import annotations

import enum
import os
import shutil
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import content
from .entry import ModuleProcess
from .job import EntryPlan
from .run import Fault, RunSpec

# A failure leaving less than this free in the workspace is the disk's fault, not the file's.
FULL_DISK = 1024 * 1024
MACHINE_ERRORS = ("No space left on device", "Disk quota exceeded", "Input/output error")

# How a module process is started instead of a fresh interpreter: argv, cwd, env, stdout, stderr -> pid.
Spawn = Callable[[list[str], str, dict[str, str], int, int], int]


class ModuleExit(Protocol):
    """A warm module's end as its launcher reports it."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    @property
    def reason(self) -> str | None: ...


class Modules(Protocol):
    """Where module processes come from: a warm launcher, or None for fresh interpreters."""

    def spawn(self, argv: list[str], cwd: str, env: dict[str, str], stdout: int, stderr: int) -> int: ...

    def fileno(self) -> int: ...

    def collect(self) -> Sequence[ModuleExit]: ...

    def supervise(self, now: float) -> float | None: ...


class Stream(Protocol):
    """One of a module's output pipes (entry.py): read until it says end of file, then closed."""

    fd: int

    def read(self) -> bool: ...

    def close(self) -> None: ...


class Phase(enum.Enum):
    """How far an attempt got; each phase has one time that is due next."""

    RUNNING = "running"  # due: its timeout
    STOPPING = "stopping"  # SIGTERM was sent; due: SIGKILL
    KILLED = "killed"  # SIGKILL was sent; due: its exit's report (else it is lost)
    DRAINING = "draining"  # its process exited; due: the end of its pipes' grace


@dataclass(frozen=True)
class Progress:
    """An attempt's phase, when its next thing is due, and why chute stopped it (timeout, fail fast, cancel)."""

    phase: Phase
    due: float  # monotonic
    reason: str | None = None

    def then(self, phase: Phase, due: float, reason: str | None = None) -> Progress:
        """The next phase; a reason once given is kept."""
        return Progress(phase, due, self.reason or reason)


@dataclass
class Attempt:
    """One attempt of one entry while it runs: its record's index, its process, and its progress."""

    index: int
    proc: ModuleProcess
    progress: Progress


def clean_slate(ws: Path, plan: EntryPlan) -> Path:
    """Remove what an earlier attempt left (a failed one may have left a folder); returns the log's path."""
    for b in plan.outputs:
        path = ws / b.artifact
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    tmp = ws / ".tmp" / plan.slot
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return ws / ".logs" / f"{plan.slot}.log"


def environ(spec: RunSpec, ws: Path, plan: EntryPlan, marker: str) -> dict[str, str]:
    """A module process's environment: the run's, and what names this entry."""
    env = dict(spec.environ)
    env.update(
        {
            "CHUTE_RUN_ID": spec.run_id,
            "CHUTE_JOB": spec.job.name,
            "CHUTE_STEP": plan.step,
            "CHUTE_MODULE": plan.module,
            "CHUTE_ENTRY": marker,
            "TMPDIR": str(ws / ".tmp" / plan.slot),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def verify(ws: Path, plan: EntryPlan, code: int | None, exit_reason: str | None) -> str | None:
    """Why an exited attempt failed (its status, a declared output missing or wrong), or None."""
    if code is None:
        return exit_reason or "its exit status is unknown"
    if code != 0:
        return f"exited with status {code}" if code > 0 else f"killed by signal {-code}"
    for b in plan.outputs:
        path = ws / b.artifact
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return f"declared output {b.artifact} was not written"
        if not os.path.isfile(path) or os.path.islink(path):
            return f"declared output {b.artifact} is not a regular file"
        if st.st_size == 0:
            return f"declared output {b.artifact} is empty"
        why = content.check(path, b.type)
        if why:
            return f"declared output {b.artifact} is not a {b.type}: it {why}"
    return None


def machine_fault(ws: Path, work_reserve: int, a: Attempt, tail: str) -> tuple[str, Fault] | None:
    """Why a failure is the machine's, not the file's: then the run waits instead of being quarantined.

    A kill from outside (the OOM killer, a dead launcher) is a CRASH: it counts toward
    max_crashes, so a file that always exhausts memory is quarantined after a few tries.
    """
    code = a.proc.returncode
    if code is None and a.proc.exit_reason:
        return a.proc.exit_reason, Fault.CRASH  # the launcher died under it
    if code == -signal.SIGKILL and a.progress.reason is None:
        return "killed by SIGKILL, not by chute (the kernel's OOM killer?)", Fault.CRASH
    try:
        st = os.statvfs(ws)
        free = st.f_bavail * st.f_frsize
    except OSError as exc:
        return f"the workspace is unavailable: {exc.strerror}", Fault.MACHINE
    if free < max(FULL_DISK, work_reserve // 4):
        return f"the workspace's disk is full ({free >> 10} KiB free)", Fault.MACHINE
    hit = next((m for m in MACHINE_ERRORS if m in tail), None)
    return (f"{hit} in the workspace", Fault.MACHINE) if hit else None
