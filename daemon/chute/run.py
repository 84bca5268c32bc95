"""The run contract: what the daemon hands to wherever a run executes, and what comes back.

Plain, frozen, picklable values: a local pool worker and a Dask worker receive the
same `RunSpec` and return the same `RunResult`. Status words live here, once,
with their mapping to the ledger's states (and so to `chute status` and the metrics).
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .job import EntryPlan, JobPlan
from .ledger import State

COMMIT_SUFFIX = ".commit"  # a claim being delivered: <run_id>.commit (claims.commit)
LOG_LIMIT = 4 * 1024 * 1024  # bytes of an entry's log kept (its tail)
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of a module's process group
OWNER = "CHUTE_OWNER"  # the environment's marker of whose process it is (a daemon's id, a Dask worker's owner)


def owned(environ: Mapping[str, str], owner: str) -> dict[str, str]:
    """`environ` marked as `owner`'s: set on all its processes, so a successor sweeps what a dead one left by it."""
    return dict(environ) | {OWNER: owner}


class RunStatus(str, enum.Enum):
    """What one execution of a run came to."""

    SUCCEEDED = "succeeded"  # published
    FAILED = "failed"  # quarantined
    RELEASED = "released"  # stopped by a daemon stop: the input goes back to its inbox
    LOST = "lost"  # another daemon took the claim over: nothing delivered
    DEFERRED = "deferred"  # not the file's fault (an outage, the machine): the claim is kept, tried later


class Fault(str, enum.Enum):
    """Why a run was deferred."""

    OUTAGE = "outage"  # a folder it needs (inbox, outbox, quarantine, archive) is not there or not writable
    MACHINE = "machine"  # the machine running it: no space or an I/O error in work_dir, the OOM killer
    CRASH = "crash"  # its worker died under it (counted toward max_crashes)


# How a run's end is written in the ledger, shown by `chute status` and counted (chute_runs_total{status}).
# A deferred run waits again: the ledger has it queued (Ledger.requeued).
LEDGER_STATE: dict[RunStatus, State] = {
    RunStatus.SUCCEEDED: State.SUCCEEDED,
    RunStatus.FAILED: State.FAILED,
    RunStatus.RELEASED: State.RELEASED,
    RunStatus.LOST: State.DISCARDED,
    RunStatus.DEFERRED: State.QUEUED,
}


class OutcomeStatus(str, enum.Enum):
    """What the steps of a run came to, before delivery."""

    SUCCEEDED = "succeeded"  # to publish
    FAILED = "failed"  # to quarantine
    CANCELLED = "cancelled"  # stopped by a daemon stop (the run is released)
    DEFERRED = "deferred"  # not the file's fault: see the verdict's fault


class EntryStatus(str, enum.Enum):
    """How one entry of a step went: the manifest's `steps[].entries[].status`, and the metrics' label."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Launch:
    """How module processes are started: forked from a warm launcher, or each a fresh interpreter."""

    mode: str = "warm"  # warm | fresh
    preload: tuple[str, ...] = ("chute.modkit", "av", "numpy", "PIL.Image")


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs, as plain values."""

    run_id: str
    job: JobPlan
    input_path: Path  # the claimed file (a stem's main file), the claimed folder, or the user's own for `chute submit`
    input_name: str  # its name as dropped (the main file's, or the folder's)
    outbox: Path
    quarantine: Path
    work_dir: Path
    owner: str  # who runs it (a daemon id, or `submit.<host>.<pid>`): its workspaces live in work_dir/owner
    default_timeout: float
    host: str
    environ: tuple[tuple[str, str], ...]
    python: str
    inbox: Path | None = None
    claim: Path | None = None  # the claim folder of a daemon run; None for `chute submit`
    on_success: str = "keep"  # keep | archive | delete: the input after publishing
    archive: Path | None = None
    kill_grace: float = KILL_GRACE
    log_limit: int = LOG_LIMIT
    launch: Launch = field(default_factory=Launch)
    work_reserve: int = 0  # bytes that must stay free in work_dir besides the run's own needs
    max_crashes: int = 3
    poison: str | None = None  # quarantine the input with this reason, running nothing (a symlink, a poison file)
    verify: str = "auto"  # auto | required | off: the delivery's checksums checked before anything runs
    mhl: bool = False  # an ASC MHL generation written into the result folder
    unit: str = "file"  # file | stem | folder: what the delivery is (contract §12; package.of reads it)

    @property
    def committed(self) -> Path | None:
        """The claim folder's name while its result is being delivered."""
        return None if self.claim is None else self.claim.with_name(self.claim.name + COMMIT_SUFFIX)

    @property
    def owner_dir(self) -> Path:
        """This owner's own folder of work_dir: its workspaces."""
        return self.work_dir / self.owner

    def new_workspace(self) -> Path:
        """A workspace path of this attempt's own: a later attempt (or another owner) never shares it."""
        return self.owner_dir / f"{self.run_id}.{secrets.token_hex(3)}"

    def timeout_of(self, plan: EntryPlan) -> float:
        """Seconds an attempt of entry `plan` may run: its own timeout, else the default."""
        return plan.timeout if plan.timeout is not None else self.default_timeout

    def context(self) -> dict[str, Any]:
        """The fields every log line of this run carries."""
        return {"run_id": self.run_id, "job": self.job.name, "inbox": _text(self.inbox), "file": self.input_name}


@dataclass
class EntryRecord:
    """One entry of a run as it went: the manifest's `steps[].entries[]`."""

    plan: EntryPlan
    status: EntryStatus = EntryStatus.PENDING
    exit_code: int | None = None
    attempts: int = 0
    duration_s: float = 0.0
    reason: str | None = None
    log_tail: str = ""
    log: Path | None = None
    run_t0: float = 0.0  # time.monotonic() when the run's steps began: started_s is measured from it
    started_s: float | None = None

    def begin(self) -> None:
        """Its next attempt starts now (the first one sets `started_s`)."""
        self.attempts += 1
        self.status = EntryStatus.RUNNING
        if self.started_s is None:
            self.started_s = time.monotonic() - self.run_t0

    def as_manifest(self) -> dict[str, Any]:
        """The entry's object in the manifest (contract §6); a for_each entry's also names its `file`."""
        return {
            "module": self.plan.module,
            "module_version": self.plan.module_version,
            "status": self.status.value,
            "exit_code": self.exit_code,
            "attempts": self.attempts,
            "duration_s": round(self.duration_s, 3),
            "started_s": None if self.started_s is None else round(self.started_s, 3),
        } | ({} if self.plan.file is None else {"file": self.plan.file})

    def failure(self, reason: str) -> dict[str, Any]:
        """The report's `error` for this entry failing; a for_each entry's names its file (`file`, and the reason)."""
        plan = self.plan
        if plan.file is None:
            return failure(reason, plan.step, plan.module, self.exit_code, self.log_tail)
        return failure(f"{plan.file}: {reason}", plan.step, plan.module, self.exit_code, self.log_tail) | {
            "file": plan.file
        }


@dataclass(frozen=True)
class Verdict:
    """What a step (and so the run's steps) came to: a status, the report's `error` object, and whose fault."""

    status: OutcomeStatus = OutcomeStatus.SUCCEEDED
    error: dict[str, Any] | None = None
    fault: Fault | None = None  # set when status is deferred

    @classmethod
    def failed(cls, error: dict[str, Any], fault: Fault | None = None) -> Verdict:
        """The file's failure (quarantined), or with a `fault` the machine's (deferred)."""
        return cls(OutcomeStatus.DEFERRED if fault else OutcomeStatus.FAILED, error, fault)

    @classmethod
    def cancelled(cls, error: dict[str, Any]) -> Verdict:
        return cls(OutcomeStatus.CANCELLED, error)


@dataclass
class Outcome:
    """What the steps did: the input to publish or quarantine."""

    started_at: str
    finished_at: str = ""
    t0: float = field(default_factory=time.monotonic)  # the monotonic twin of started_at
    steps: list[tuple[str, list[EntryRecord]]] = field(default_factory=list)
    verdict: Verdict = Verdict()

    @property
    def status(self) -> OutcomeStatus:
        return self.verdict.status

    @property
    def error(self) -> dict[str, Any] | None:
        return self.verdict.error

    @property
    def fault(self) -> Fault | None:
        return self.verdict.fault


@dataclass(frozen=True)
class EntryStat:
    """An entry's figures, for metrics: module, how it ended, how long, how many attempts."""

    module: str
    status: EntryStatus
    duration_s: float
    attempts: int


@dataclass(frozen=True)
class RunResult:
    """What a run came to, delivered or not: what the daemon records, counts and notifies."""

    run_id: str
    status: RunStatus
    result_dir: Path | None = None
    error: dict[str, Any] | None = None
    input_size: int | None = None
    input_sha256: str | None = None
    archived_to: Path | None = None
    fault: Fault | None = None
    entries: tuple[EntryStat, ...] = ()
    output_size: int | None = None  # the bytes of the public artifacts a succeeded run published
    duration_s: float | None = None
    worker: str | None = None  # where it executed (the executor's name for the worker)
    kept: bool = False  # deferred with its built result kept in work_dir: the retry only delivers (keep.py)

    @property
    def reason(self) -> str:
        """Why it ended as it did, in one line: the error's reason, or the status."""
        reason = (self.error or {}).get("reason")
        return str(reason) if reason else self.status.value

    def figures(self) -> dict[str, Any]:
        """What the ledger keeps for the web page's stats: each entry's module, status and time; bytes out."""
        entries = [[e.module, e.status.value, e.duration_s] for e in self.entries]
        return {"entries": entries, "bytes_out": self.output_size}


def utcnow() -> str:
    """Now, as the manifest's timestamps write it: `2025-01-31T12:00:00.000Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failure(
    reason: str, step: str | None = None, module: str | None = None, exit_code: int | None = None, log_tail: str = ""
) -> dict[str, Any]:
    """The `error` object of a report (contract §6)."""
    return {"step": step, "module": module, "reason": reason, "exit_code": exit_code, "log_tail": log_tail}


def os_reason(exc: OSError) -> str:
    """`No space left on device (/srv/out/x)`: an OSError as one line, without Python's `[Errno 28]`."""
    where = exc.filename if exc.filename is not None else ""
    text = exc.strerror or str(exc)
    return f"{text} ({where})" if where else text


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)
