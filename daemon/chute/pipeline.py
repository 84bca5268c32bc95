"""The steps of a job run in order, the entries of a step at once, in a prepared workspace."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import content, logs
from .entry import BoundedLog, EntryProcess, stop_all, sweep
from .fileops import private_copy
from .job import EntryPlan, JobPlan, StepPlan

POLL = 0.05

# Called with an event name and its fields; `chute submit` draws progress from it.
Emit = Callable[..., None]


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs, as plain picklable values (a pool or remote worker runs it)."""

    run_id: str
    job: JobPlan
    input_path: str  # the file to read: the claimed file, or the user's own for `chute submit`
    input_name: str  # its original name, as dropped
    outbox: str
    quarantine: str
    work_dir: str
    default_timeout: float
    host: str
    environ: tuple[tuple[str, str], ...]
    python: str
    inbox: str | None = None
    claim: str | None = None  # the claim folder of a daemon run; None for `chute submit`
    on_success: str = "keep"  # keep | archive | delete: what happens to the input after publishing
    archive: str | None = None
    cancel_file: str | None = None  # created by the service to stop the run (graceful stop)
    kill_grace: float = 5.0
    log_limit: int = 4 * 1024 * 1024

    def context(self) -> dict[str, Any]:
        """The fields every log line of this run carries."""
        return {"run_id": self.run_id, "job": self.job.name, "inbox": self.inbox, "file": self.input_name}


@dataclass
class EntryRecord:
    plan: EntryPlan
    status: str = "pending"  # pending | running | succeeded | failed | cancelled
    exit_code: int | None = None
    attempts: int = 0
    duration_s: float = 0.0
    reason: str | None = None
    log_tail: str = ""
    log: str = ""

    def as_manifest(self) -> dict[str, Any]:
        return {
            "module": self.plan.module, "module_version": self.plan.module_version,
            "status": self.status, "exit_code": self.exit_code, "attempts": self.attempts,
            "duration_s": round(self.duration_s, 3),
        }


@dataclass
class Outcome:
    """What the steps did: the input to publish or quarantine."""

    status: str  # succeeded | failed | cancelled
    started_at: str
    finished_at: str = ""
    steps: list[tuple[str, list[EntryRecord]]] = field(default_factory=list)
    error: dict[str, Any] | None = None


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failure(reason: str, step: str | None = None, module: str | None = None,
            exit_code: int | None = None, log_tail: str = "") -> dict[str, Any]:
    return {"step": step, "module": module, "reason": reason, "exit_code": exit_code, "log_tail": log_tail}


def prepare_workspace(spec: RunSpec) -> Path:
    """A fresh workspace with the input placed under each of its bound names."""
    ws = Path(spec.work_dir) / spec.run_id
    shutil.rmtree(ws, ignore_errors=True)
    (ws / ".tmp").mkdir(parents=True)
    (ws / ".logs").mkdir()
    # A copy, never a hard link to the claimed (or `chute submit`'s own) file: a module that
    # writes to its input must spoil only the workspace, not the one copy of the user's file.
    first, *others = spec.job.input_names
    private_copy(Path(spec.input_path), ws / first)
    for name in others:
        os.link(ws / first, ws / name)
    return ws


def run_steps(spec: RunSpec, ws: Path, emit: Emit | None = None) -> Outcome:
    """Check the input, then run every step in order; stops at the first failed entry."""
    emit = emit or (lambda event, **kw: None)
    log = logs.get("chute.pipeline").bind(**spec.context())
    outcome = Outcome(status="succeeded", started_at=utcnow())
    try:
        first = ws / spec.job.input_names[0]
        before = os.stat(first)
        why = content.check(first, spec.job.input_type)
        if why:
            outcome.status = "failed"
            outcome.error = failure(f"the input is not a {spec.job.input_type}: it {why}")
            return outcome
        for step in spec.job.steps:
            records = [EntryRecord(e) for e in step.entries]
            outcome.steps.append((step.name, records))
            status, error = _Step(spec, ws, step, records, log, emit).run()
            if status != "succeeded":
                outcome.status, outcome.error = status, error
                return outcome
        after = os.stat(first)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            outcome.status = "failed"
            outcome.error = failure("a module modified the run's input file")
        return outcome
    finally:
        outcome.finished_at = utcnow()


class _Step:
    """The entries of one step, supervised together: timeouts, retries, fail fast."""

    def __init__(self, spec: RunSpec, ws: Path, step: StepPlan, records: list[EntryRecord], log, emit: Emit):
        self.spec, self.ws, self.step, self.records, self.log, self.emit = spec, ws, step, records, log, emit
        self.running: dict[int, EntryProcess] = {}
        self.deadlines: dict[int, float] = {}

    def run(self) -> tuple[str, dict[str, Any] | None]:
        try:
            for i in range(len(self.records)):
                error = self._start(i)
                if error is not None:
                    self._stop_all("cancelled")
                    return "failed", error
            while self.running:
                if self._cancelled():
                    self._stop_all("cancelled")
                    return "cancelled", failure("the daemon is stopping", step=self.step.name)
                for i in list(self.running):
                    error = self._check(i)
                    if error is not None:
                        self._stop_all("cancelled")
                        return "failed", error
                time.sleep(POLL)
        except BaseException:
            self._stop_all("cancelled")  # Ctrl-C in `chute submit`, or any bug: no orphan left
            raise
        return "succeeded", None

    def _cancelled(self) -> bool:
        return self.spec.cancel_file is not None and os.path.exists(self.spec.cancel_file)

    def _timeout(self, plan: EntryPlan) -> float:
        return plan.timeout if plan.timeout is not None else self.spec.default_timeout

    def _start(self, i: int) -> dict[str, Any] | None:
        rec = self.records[i]
        plan = rec.plan
        rec.attempts += 1
        rec.status = "running"
        for b in plan.outputs:  # a clean state for every attempt (a failed one may have left a folder)
            path = self.ws / b.artifact
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        tmp = self.ws / ".tmp" / plan.label
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log_path = self.ws / ".logs" / f"{plan.label}.log"
        rec.log = str(log_path)
        blog = BoundedLog(log_path, self.spec.log_limit)
        blog.write(f"[chute: attempt {rec.attempts} of {plan.retries + 1}, {utcnow()}]\n".encode())
        # Unique to this attempt: after a take-over, the old owner (frozen, not dead) and the new
        # one run the same run id, and one's sweep must never kill the other's modules.
        marker = f"{self.spec.run_id}/{plan.label}/{secrets.token_hex(6)}"
        env = dict(self.spec.environ)
        env.update({
            "CHUTE_RUN_ID": self.spec.run_id, "CHUTE_JOB": self.spec.job.name, "CHUTE_STEP": plan.step,
            "CHUTE_MODULE": plan.module, "CHUTE_ENTRY": marker, "TMPDIR": str(tmp),
            "PYTHONUNBUFFERED": "1",
        })
        argv = [self.spec.python, plan.entrypoint, *plan.argv(self.ws)]
        on_progress = lambda value: self.emit("entry.progress", label=plan.label, module=plan.module, progress=value)
        try:
            proc = EntryProcess(plan, argv, env, blog, on_progress)
        except OSError as exc:  # its folder vanished since it was loaded: the entry fails, with the reason
            blog.close()
            rec.status = "failed"
            reason = f"cannot start module {plan.module}: {exc.strerror or exc} ({exc.filename or plan.folder})"
            self.log.warning("entry.failed", step=plan.step, module=plan.module, attempt=rec.attempts, reason=reason,
                             retrying=False)
            return failure(reason, plan.step, plan.module)
        proc.marker = marker
        self.running[i] = proc
        self.deadlines[i] = time.monotonic() + self._timeout(plan)
        self.log.info("entry.started", step=plan.step, module=plan.module, attempt=rec.attempts, pid=proc.proc.pid)
        self.emit("entry.started", label=plan.label, module=plan.module, attempt=rec.attempts)
        return None

    def _check(self, i: int) -> dict[str, Any] | None:
        """Look at one running entry; returns the run's error when it failed for good."""
        proc, rec = self.running[i], self.records[i]
        code = proc.poll()
        if code is None:
            if time.monotonic() < self.deadlines[i]:
                return None
            stop_all([proc], self.spec.kill_grace)
            reason = f"timed out after {self._timeout(rec.plan):g} s"
            code = proc.proc.returncode
        else:
            reason = None
        self._finish(i, proc)
        if reason is None:
            reason = self._verify(rec.plan, code)
        rec.exit_code, rec.duration_s = code, rec.duration_s + proc.duration
        rec.log_tail = "\n".join(proc.stderr_tail)
        if reason is None:
            rec.status = "succeeded"
            self.log.info("entry.finished", step=rec.plan.step, module=rec.plan.module, exit_code=code,
                          attempt=rec.attempts, duration_s=round(proc.duration, 3))
            self.emit("entry.finished", label=rec.plan.label, module=rec.plan.module)
            return None
        rec.reason = reason
        final = rec.attempts > rec.plan.retries
        self.log.warning("entry.failed", step=rec.plan.step, module=rec.plan.module, exit_code=code,
                         attempt=rec.attempts, reason=reason, retrying=not final)
        self.emit("entry.failed", label=rec.plan.label, module=rec.plan.module, reason=reason, retrying=not final)
        if not final:
            return self._start(i)
        rec.status = "failed"
        return failure(reason, rec.plan.step, rec.plan.module, code, rec.log_tail)

    def _finish(self, i: int, proc: EntryProcess) -> None:
        del self.running[i]
        proc.reap(grace=0.2)
        sweep(f"CHUTE_ENTRY={proc.marker}")
        for t in proc.readers:
            t.join(timeout=5)
        proc.log.close()

    def _verify(self, plan: EntryPlan, code: int) -> str | None:
        if code != 0:
            return f"exited with status {code}" if code > 0 else f"killed by signal {-code}"
        for b in plan.outputs:
            path = self.ws / b.artifact
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

    def _stop_all(self, status: str) -> None:
        procs = list(self.running.items())
        stop_all([p for _, p in procs], self.spec.kill_grace)
        for i, proc in procs:
            self._finish(i, proc)
            rec = self.records[i]
            rec.status, rec.exit_code = status, proc.proc.returncode
            rec.duration_s += proc.duration
        for rec in self.records:
            if rec.status == "pending":
                rec.status = status
