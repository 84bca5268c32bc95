"""The step engine: the steps of a job in order, the entries of a step at once, in a prepared workspace.

One thread waits on everything that can happen (module exits, their output, the
cancel signal, the next deadline) with one `selectors` call, so each next thing
starts within a millisecond of its cause; nothing sleeps and polls. Each
registered descriptor carries the callable that handles it (`key.data()`).
"""

from __future__ import annotations

import os
import secrets
import selectors
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from structlog.stdlib import BoundLogger

from . import bind, content, entry, logs
from .attempt import Attempt, Modules, Phase, Progress, Spawn, Stream, clean_slate, environ, machine_fault, verify
from .entry import BoundedLog, ModuleProcess, kill_orphans, sweep
from .job import EntryPlan, StepPlan
from .run import EntryRecord, EntryStatus, Fault, Outcome, OutcomeStatus, RunSpec, Verdict, failure, utcnow

# Called with an event name and its fields; `chute submit` draws progress from it.
Emit = Callable[..., None]
# After a module exits and its group is killed, its pipes close at once unless an escaped
# process without our marker holds them: wait this long for their last lines, then let go.
PIPE_GRACE = 2.0
# After SIGKILL a module's exit is reported at once (its pidfd, or its launcher's message); one that
# is not reported within this is taken as lost rather than waited for.
EXIT_REPORT = 10.0
NEVER = float("inf")


class Cancel(Protocol):
    """What stops a run (a daemon's stop): a descriptor that turns readable, and the check."""

    def fileno(self) -> int: ...

    def is_set(self) -> bool: ...


def run_steps(
    spec: RunSpec, ws: Path, cancel: Cancel | None = None, emit: Emit | None = None, modules: Modules | None = None
) -> Outcome:
    """Check the input, then run every step in order; stops at the first failed entry."""
    emit = emit or (lambda event, **kw: None)
    log = logs.get("chute.pipeline").bind(**spec.context())
    outcome = Outcome(started_at=utcnow())
    try:
        first = ws / spec.job.input_names[0]
        before = os.stat(first)
        why = content.check(first, spec.job.input_type)
        if why:
            reason = f"{spec.input_name} is not a {spec.job.input_type}: it {why}"
            # chute's own check refused it, before any module ran
            outcome.verdict = Verdict.failed(failure(reason) | {"check": "input"})
            return outcome
        for step in spec.job.steps:
            records = [EntryRecord(e, run_t0=outcome.t0) for e in step.entries]
            outcome.steps.append((step.name, records))
            outcome.verdict = Step(spec, ws, step, records, log, emit, cancel, modules).run()
            if outcome.status is not OutcomeStatus.SUCCEEDED:
                return outcome
        after = os.stat(first)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            outcome.verdict = Verdict.failed(failure("a module modified the run's input file"))
        return outcome
    finally:
        outcome.finished_at = utcnow()


class Step:
    """The entries of one step, supervised together: timeouts, retries, fail fast, cancel."""

    def __init__(
        self,
        spec: RunSpec,
        ws: Path,
        step: StepPlan,
        records: list[EntryRecord],
        log: BoundLogger,
        emit: Emit,
        cancel: Cancel | None,
        modules: Modules | None,
    ):
        self.spec, self.ws, self.step, self.records, self.log, self.emit = spec, ws, step, records, log, emit
        self.modules = modules
        self.attempts: dict[int, Attempt] = {}
        self.by_pid: dict[int, Attempt] = {}
        self.sel = selectors.DefaultSelector()
        self.verdict: Verdict | None = None
        if cancel is not None and cancel.fileno() >= 0:
            self.sel.register(cancel.fileno(), selectors.EVENT_READ, partial(self._on_cancel, cancel))
        self.launcher_fd = -1
        self.launcher_due = NEVER  # when the launcher is next looked at (Modules.supervise)

    def run(self) -> Verdict:
        """Run the step's entries to their end; returns what the step came to."""
        try:
            self._start_next()
            while self.attempts:
                self._wait(time.monotonic())
        except BaseException:
            self._stop_all("cancelled", grace=0.0)  # Ctrl-C in `chute submit`, or any bug: no orphan left
            raise
        finally:
            self.sel.close()
        for rec in self.records:
            if rec.status == EntryStatus.PENDING:
                rec.status = EntryStatus.CANCELLED
        return self.verdict or Verdict()

    # --- waiting ---

    def _wait(self, now: float) -> None:
        due = min([self.launcher_due, *(a.progress.due for a in self.attempts.values())])
        for key, _ in self.sel.select(None if due == NEVER else max(0.0, due - now)):
            handler: Callable[[], None] = key.data
            handler()
        now = time.monotonic()
        if now >= self.launcher_due and self.modules is not None:
            # A launcher it kills reports its modules lost through its fd, read on the next select.
            self.launcher_due = self.modules.supervise(now) or NEVER
        for attempt in list(self.attempts.values()):
            self._tick(attempt, now)

    def _on_cancel(self, cancel: Cancel) -> None:
        if not cancel.is_set():
            return
        self.sel.unregister(cancel.fileno())  # level-triggered: once is enough
        if self.verdict is None:
            self.verdict = Verdict.cancelled(failure("the daemon is stopping", step=self.step.name))
        self._stop_all("cancelled", grace=self.spec.kill_grace)

    def _on_launcher(self, modules: Modules) -> None:
        for ex in modules.collect():
            attempt = self.by_pid.get(ex.pid)
            if attempt is not None and attempt.progress.phase is not Phase.DRAINING:  # (not one declared lost)
                attempt.proc.set_exit(ex.returncode, ex.reason)
                self._exited(attempt)
        # A dead launcher's socket leaves its poller in collect(), which then reports its modules
        # lost: the poller stays registered (the same fd when a new launcher starts).

    def _on_output(self, stream: Stream) -> None:
        if not stream.read():
            self.sel.unregister(stream.fd)
            stream.close()

    def _on_exit(self, a: Attempt) -> None:
        """A fresh module's pidfd turned readable: it exited."""
        self.sel.unregister(a.proc.pidfd)
        a.proc.reap_fresh()
        self._exited(a)

    def _tick(self, a: Attempt, now: float) -> None:
        p = a.progress
        if p.phase is Phase.DRAINING:
            if now >= p.due or all(s.fd < 0 for s in a.proc.streams):
                self._finish(a)
        elif now < p.due:
            return
        elif p.phase is Phase.KILLED:
            # SIGKILL cannot be refused: an exit that is not reported is lost, not pending (never wait for ever).
            a.proc.set_exit(None, "no exit status came back after SIGKILL")
            self._exited(a)
        elif p.phase is Phase.STOPPING:
            a.proc.signal_group(signal.SIGKILL)
            a.progress = p.then(Phase.KILLED, now + EXIT_REPORT)
        else:
            timeout = self.spec.timeout_of(self.records[a.index].plan)
            self._terminate(a, self.spec.kill_grace, f"timed out after {timeout:g} s")

    def _terminate(self, a: Attempt, grace: float, reason: str) -> None:
        a.proc.signal_group(signal.SIGTERM)
        a.progress = a.progress.then(Phase.STOPPING, time.monotonic() + grace, reason)

    def _exited(self, a: Attempt) -> None:
        """The module's own process is gone: kill what it left in its group, then let its pipes drain."""
        if a.proc.pidfd >= 0:  # its exit was declared lost: the pidfd leaves the selector before it is closed
            self.sel.unregister(a.proc.pidfd)
        a.proc.signal_group(signal.SIGKILL)
        self._sweep(a.proc.marker)
        a.progress = a.progress.then(Phase.DRAINING, time.monotonic() + PIPE_GRACE)

    def _sweep(self, marker: str) -> None:
        if entry.is_subreaper():
            kill_orphans(self._known(), f"CHUTE_ENTRY={marker}")
        else:
            sweep(f"CHUTE_ENTRY={marker}")

    def _known(self) -> set[int]:
        pids = {a.proc.popen.pid for a in self.attempts.values() if a.proc.popen is not None}
        pid = getattr(self.modules, "pid", None)
        return pids | ({pid} if pid else set())

    # --- starting ---

    def _start_next(self) -> None:
        """Start what may start now: every entry, but a for_each entry's files only so many at once (bind.AT_ONCE)."""
        for i in bind.to_start(self.records, [a.index for a in self.attempts.values()]):
            if self.verdict is None:
                self._start(i)

    def _start(self, i: int) -> None:
        """Start the next attempt of entry `i`; one that cannot start fails the step."""
        rec = self.records[i]
        plan = rec.plan
        rec.begin()
        try:
            log_path = clean_slate(self.ws, plan)
            blog = BoundedLog(log_path, self.spec.log_limit)
        except OSError as exc:  # the workspace itself (ours, not the file's): its disk is full or gone
            self._not_started(rec, f"cannot prepare the workspace for {plan.module}: {exc.strerror or exc}")
            return
        rec.log = log_path
        blog.write(f"[chute: attempt {rec.attempts} of {plan.retries + 1}, {utcnow()}]\n".encode())
        # Unique to this attempt: after a take-over, the old owner (frozen, not dead) and the new
        # one run the same run id, and one's sweep must never kill the other's modules.
        marker = f"{self.spec.run_id}/{plan.label}/{secrets.token_hex(6)}"
        argv = [self.spec.python, plan.entrypoint, *plan.argv(self.ws)]
        env = environ(self.spec, self.ws, plan, marker)
        try:
            proc = ModuleProcess(
                argv, plan.folder, env, blog, marker, self._spawner(plan), partial(self._progress, plan)
            )
        except OSError as exc:  # its folder vanished since it was loaded: the entry fails, with the reason
            blog.close()
            where = exc.filename or plan.folder
            self._not_started(rec, f"cannot start module {plan.module}: {exc.strerror or exc} ({where})", fault=None)
            return
        if proc.fallback is not None:
            self.log.info("entry.fresh", module=plan.module, reason=proc.fallback)
        self._track(Attempt(i, proc, Progress(Phase.RUNNING, time.monotonic() + self.spec.timeout_of(plan))))
        self.log.info("entry.started", **plan.fields, attempt=rec.attempts, pid=proc.pid)
        self._emit("entry.started", plan, attempt=rec.attempts)

    def _not_started(self, rec: EntryRecord, reason: str, fault: Fault | None = Fault.MACHINE) -> None:
        rec.status = EntryStatus.FAILED
        plan = rec.plan
        self.log.warning("entry.failed", **plan.fields, attempt=rec.attempts, reason=reason, retrying=False)
        self._fail(failure(reason, plan.step, plan.module), fault)

    def _progress(self, plan: EntryPlan, value: float) -> None:
        self._emit("entry.progress", plan, progress=value)

    def _emit(self, event: str, plan: EntryPlan, **fields: Any) -> None:
        """An event for the progress reporter; a for_each instance names its file, one of how many."""
        if plan.file is not None:
            fields |= {"member": plan.file, "members": sum(r.plan.label == plan.label for r in self.records)}
        self.emit(event, label=plan.label, module=plan.module, **fields)

    def _spawner(self, plan: EntryPlan) -> Spawn | None:
        if self.modules is None or plan.launcher == "fresh":
            return None
        return self.modules.spawn

    def _track(self, a: Attempt) -> None:
        self.attempts[a.index] = a
        self.by_pid[a.proc.pid] = a
        for stream in a.proc.streams:
            self.sel.register(stream.fd, selectors.EVENT_READ, partial(self._on_output, stream))
        if a.proc.pidfd >= 0:
            self.sel.register(a.proc.pidfd, selectors.EVENT_READ, partial(self._on_exit, a))
        elif self.modules is not None:
            self.launcher_due = 0.0  # a warm module: watch over its launcher from now on
            if self.modules.fileno() == self.launcher_fd:
                return
            if self.launcher_fd >= 0:
                self.sel.unregister(self.launcher_fd)
            self.launcher_fd = self.modules.fileno()
            self.sel.register(self.launcher_fd, selectors.EVENT_READ, partial(self._on_launcher, self.modules))

    # --- finishing ---

    def _finish(self, a: Attempt) -> None:
        """An attempt is over (exited, pipes drained): succeeded, retried, failed, or deferred."""
        del self.attempts[a.index]
        self.by_pid.pop(a.proc.pid, None)
        for stream in a.proc.streams:
            if stream.fd >= 0:
                self.sel.unregister(stream.fd)
        a.proc.close()
        rec = self.records[a.index]
        rec.exit_code, rec.duration_s = a.proc.returncode, rec.duration_s + a.proc.duration
        rec.log_tail = "\n".join(a.proc.stderr_tail)
        if self.verdict is not None:  # stopped because the step is already over (fail fast, cancel)
            rec.status = EntryStatus.CANCELLED
            return
        reason = a.progress.reason or verify(self.ws, rec.plan, a.proc.returncode, a.proc.exit_reason)
        if reason is None:
            self._succeeded(rec, a)
            return
        fault = machine_fault(self.ws, self.spec.work_reserve, a, rec.log_tail)
        self._failed(rec, reason if fault is None else fault[0], None if fault is None else fault[1])

    def _succeeded(self, rec: EntryRecord, a: Attempt) -> None:
        rec.status = EntryStatus.SUCCEEDED
        took = round(a.proc.duration, 3)
        self.log.info(
            "entry.finished", **rec.plan.fields, exit_code=rec.exit_code, attempt=rec.attempts, duration_s=took
        )
        self._emit("entry.finished", rec.plan)
        self._start_next()

    def _failed(self, rec: EntryRecord, reason: str, fault: Fault | None) -> None:
        rec.reason = reason
        retrying = fault is None and rec.attempts <= rec.plan.retries
        self.log.warning(
            "entry.failed",
            **rec.plan.fields,
            exit_code=rec.exit_code,
            attempt=rec.attempts,
            reason=reason,
            retrying=retrying,
        )
        self._emit("entry.failed", rec.plan, reason=reason, retrying=retrying)
        if retrying:
            self._start(next(i for i, r in enumerate(self.records) if r is rec))  # (for_each: many per plan)
            return
        rec.status = EntryStatus.FAILED
        error = rec.failure(reason)
        self._fail(error, fault)

    def _fail(self, error: dict[str, Any], fault: Fault | None) -> None:
        """The step (and so the run) is over: fail fast, stopping the entries still running."""
        if self.verdict is None:
            self.verdict = Verdict.failed(error, fault)
        self._stop_all("cancelled", grace=self.spec.kill_grace)

    def _stop_all(self, reason: str, grace: float) -> None:
        """SIGTERM every running attempt's group; SIGKILL follows after `grace` (their exits end the wait)."""
        for a in self.attempts.values():
            if a.progress.phase is Phase.RUNNING:
                self._terminate(a, grace, reason)
        if grace <= 0:  # an exception is unwinding: nothing will wait on the selector again
            for a in list(self.attempts.values()):
                a.proc.signal_group(signal.SIGKILL)
                if a.proc.popen is not None:
                    a.proc.popen.wait()
                self._sweep(a.proc.marker)
                a.proc.close()
            self.attempts.clear()
