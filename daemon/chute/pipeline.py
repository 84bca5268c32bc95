"""The step engine: the steps of a job in order, the entries of a step at once, in a prepared workspace.

One thread waits on everything that can happen (module exits, their output, the
cancel signal, the next deadline) with one `selectors` call, so each next thing
starts within a millisecond of its cause; nothing sleeps and polls.
"""

from __future__ import annotations

import os
import secrets
import selectors
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from . import content, entry, logs
from .entry import BoundedLog, ModuleProcess, kill_orphans, sweep
from .job import EntryPlan, StepPlan
from .run import EntryRecord, EntryStatus, Fault, Outcome, RunSpec, failure, utcnow

# Called with an event name and its fields; `chute submit` draws progress from it.
Emit = Callable[..., None]
# After a module exits and its group is killed, its pipes close at once unless an escaped
# process without our marker holds them: wait this long for their last lines, then let go.
PIPE_GRACE = 2.0
# After SIGKILL a module's exit is reported at once (its pidfd, or its launcher's message); one that
# is not reported within this is taken as lost rather than waited for.
EXIT_REPORT = 10.0
# A failure leaving less than this free in the workspace is the disk's fault, not the file's.
FULL_DISK = 1024 * 1024
MACHINE_ERRORS = ("No space left on device", "Disk quota exceeded", "Input/output error")


class Cancel(Protocol):
    """What stops a run (a daemon's stop): a descriptor that turns readable, and the check."""

    def fileno(self) -> int: ...

    def is_set(self) -> bool: ...


class Modules(Protocol):
    """Where module processes come from: a warm launcher, or None for fresh interpreters."""

    def spawn(self, argv: list[str], cwd: str, env: dict[str, str], stdout: int, stderr: int) -> int: ...

    def fileno(self) -> int: ...

    def collect(self) -> list: ...

    def supervise(self, now: float) -> float | None: ...


def run_steps(
    spec: RunSpec, ws: Path, cancel: Cancel | None = None, emit: Emit | None = None, modules: Modules | None = None
) -> Outcome:
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
            reason = f"{spec.input_name} is not a {spec.job.input_type}: it {why}"
            outcome.error = failure(reason) | {"check": "input"}  # chute's own check refused it, before any module
            return outcome
        for step in spec.job.steps:
            records = [EntryRecord(e) for e in step.entries]
            outcome.steps.append((step.name, records))
            status, error, fault = Step(spec, ws, step, records, log, emit, cancel, modules).run()
            if status != "succeeded":
                outcome.status, outcome.error, outcome.fault = status, error, fault
                return outcome
        after = os.stat(first)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            outcome.status = "failed"
            outcome.error = failure("a module modified the run's input file")
        return outcome
    finally:
        outcome.finished_at = utcnow()


class _Attempt:
    """One attempt of one entry while it runs: its process, deadlines, and how it is being stopped."""

    def __init__(self, index: int, proc: ModuleProcess, deadline: float):
        self.index, self.proc, self.deadline = index, proc, deadline
        self.kill_at: float | None = None  # SIGKILL due (SIGTERM was sent)
        self.killed = False  # SIGKILL was sent: its exit is due by kill_at
        self.drain_until: float | None = None  # exited: its pipes get until then
        self.reason: str | None = None  # set when chute stopped it (timeout, fail fast, cancel)


class Step:
    """The entries of one step, supervised together: timeouts, retries, fail fast, cancel."""

    def __init__(
        self,
        spec: RunSpec,
        ws: Path,
        step: StepPlan,
        records: list[EntryRecord],
        log,
        emit: Emit,
        cancel: Cancel | None,
        modules: Modules | None,
    ):
        self.spec, self.ws, self.step, self.records, self.log, self.emit = spec, ws, step, records, log, emit
        self.cancel, self.modules = cancel, modules
        self.attempts: dict[int, _Attempt] = {}
        self.by_pid: dict[int, _Attempt] = {}
        self.sel = selectors.DefaultSelector()
        self.verdict: tuple[str, dict[str, Any] | None, Fault | None] | None = None
        if cancel is not None and cancel.fileno() >= 0:
            self.sel.register(cancel.fileno(), selectors.EVENT_READ, "cancel")
        self.launcher_fd = -1
        self.launcher_due = float("inf")  # when the launcher is next looked at (Modules.supervise)

    def run(self) -> tuple[str, dict[str, Any] | None, Fault | None]:
        try:
            for i in range(len(self.records)):
                if self.verdict is None:
                    self._start(i)
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
        return self.verdict or ("succeeded", None, None)

    # --- waiting ---

    def _wait(self, now: float) -> None:
        due = min(self.launcher_due, *(d for a in self.attempts.values() for d in self._deadlines(a)))
        for key, _ in self.sel.select(None if due == float("inf") else max(0.0, due - now)):
            self._ready(key.data)
        now = time.monotonic()
        if now >= self.launcher_due:
            # A launcher it kills reports its modules lost through its fd, read on the next select.
            self.launcher_due = self.modules.supervise(now) or float("inf")
        for attempt in list(self.attempts.values()):
            self._tick(attempt, now)

    @staticmethod
    def _deadlines(a: _Attempt) -> list[float]:
        if a.drain_until is not None:
            return [a.drain_until]
        return [a.kill_at if a.kill_at is not None else a.deadline]

    def _ready(self, what) -> None:
        if what == "cancel":
            if self.cancel.is_set():
                self.sel.unregister(self.cancel.fileno())  # level-triggered: once is enough
                if self.verdict is None:
                    self.verdict = ("cancelled", failure("the daemon is stopping", step=self.step.name), None)
                self._stop_all("cancelled", grace=self.spec.kill_grace)
        elif what == "launcher":
            for ex in self.modules.collect():
                attempt = self.by_pid.get(ex.pid)
                if attempt is not None and attempt.drain_until is None:  # (not one already declared lost)
                    attempt.proc.set_exit(ex.returncode, ex.reason)
                    self._exited(attempt)
            # A dead launcher's socket leaves its poller in collect(), which then reports its modules
            # lost: the poller stays registered (the same fd when a new launcher starts).
        elif isinstance(what, tuple):  # (attempt, stream): output to read
            stream = what[1]
            if not stream.read():
                self.sel.unregister(stream.fd)
                stream.close()
        else:  # a fresh module's pidfd
            self.sel.unregister(what.proc.pidfd)
            what.proc.reap_fresh()
            self._exited(what)

    def _tick(self, a: _Attempt, now: float) -> None:
        if a.drain_until is not None:
            if now >= a.drain_until or all(s.fd < 0 for s in a.proc.streams):
                self._finish(a)
        elif a.kill_at is not None and now >= a.kill_at and a.killed:
            # SIGKILL cannot be refused: an exit that is not reported is lost, not pending (never wait for ever).
            a.proc.set_exit(None, "no exit status came back after SIGKILL")
            self._exited(a)
        elif a.kill_at is not None and now >= a.kill_at:
            a.proc.signal_group(signal.SIGKILL)
            a.killed, a.kill_at = True, now + EXIT_REPORT
        elif a.kill_at is None and now >= a.deadline:
            timeout = self._timeout(a)
            a.reason = f"timed out after {timeout:g} s"
            self._terminate(a, self.spec.kill_grace)

    def _terminate(self, a: _Attempt, grace: float) -> None:
        a.proc.signal_group(signal.SIGTERM)
        a.kill_at = time.monotonic() + grace

    def _exited(self, a: _Attempt) -> None:
        """The module's own process is gone: kill what it left in its group, then let its pipes drain."""
        if a.proc.pidfd >= 0:  # its exit was declared lost: the pidfd leaves the selector before it is closed
            self.sel.unregister(a.proc.pidfd)
        a.proc.signal_group(signal.SIGKILL)
        self._sweep(a.proc.marker)
        a.drain_until = time.monotonic() + PIPE_GRACE

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

    def _timeout(self, a: _Attempt | EntryPlan) -> float:
        plan = a if isinstance(a, EntryPlan) else self.records[a.index].plan
        return plan.timeout if plan.timeout is not None else self.spec.default_timeout

    def _start(self, i: int) -> None:
        rec = self.records[i]
        plan = rec.plan
        rec.attempts += 1
        rec.status = EntryStatus.RUNNING
        try:
            log_path = self._clean_slate(plan)
            blog = BoundedLog(log_path, self.spec.log_limit)
        except OSError as exc:  # the workspace itself (ours, not the file's): its disk is full or gone
            rec.status = EntryStatus.FAILED
            reason = f"cannot prepare the workspace for {plan.module}: {exc.strerror or exc}"
            self.log.warning(
                "entry.failed", step=plan.step, module=plan.module, attempt=rec.attempts, reason=reason, retrying=False
            )
            self._fail(failure(reason, plan.step, plan.module), Fault.MACHINE)
            return
        rec.log = log_path
        blog.write(f"[chute: attempt {rec.attempts} of {plan.retries + 1}, {utcnow()}]\n".encode())
        # Unique to this attempt: after a take-over, the old owner (frozen, not dead) and the new
        # one run the same run id, and one's sweep must never kill the other's modules.
        marker = f"{self.spec.run_id}/{plan.label}/{secrets.token_hex(6)}"
        argv = [self.spec.python, plan.entrypoint, *plan.argv(self.ws)]

        def on_progress(value: float) -> None:
            self.emit("entry.progress", label=plan.label, module=plan.module, progress=value)

        try:
            proc = ModuleProcess(
                argv, plan.folder, self._environ(plan, marker), blog, marker, self._spawner(plan), on_progress
            )
        except OSError as exc:  # its folder vanished since it was loaded: the entry fails, with the reason
            blog.close()
            rec.status = EntryStatus.FAILED
            reason = f"cannot start module {plan.module}: {exc.strerror or exc} ({exc.filename or plan.folder})"
            self.log.warning(
                "entry.failed", step=plan.step, module=plan.module, attempt=rec.attempts, reason=reason, retrying=False
            )
            self._fail(failure(reason, plan.step, plan.module), None)
            return
        if proc.fallback is not None:
            self.log.info("entry.fresh", module=plan.module, reason=proc.fallback)
        attempt = _Attempt(i, proc, time.monotonic() + self._timeout(plan))
        self._track(attempt)
        self.log.info("entry.started", step=plan.step, module=plan.module, attempt=rec.attempts, pid=proc.pid)
        self.emit("entry.started", label=plan.label, module=plan.module, attempt=rec.attempts)

    def _clean_slate(self, plan: EntryPlan) -> Path:
        """Remove what an earlier attempt left (a failed one may have left a folder); returns the log's path."""
        for b in plan.outputs:
            path = self.ws / b.artifact
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        tmp = self.ws / ".tmp" / plan.label
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return self.ws / ".logs" / f"{plan.label}.log"

    def _environ(self, plan: EntryPlan, marker: str) -> dict[str, str]:
        env = dict(self.spec.environ)
        env.update(
            {
                "CHUTE_RUN_ID": self.spec.run_id,
                "CHUTE_JOB": self.spec.job.name,
                "CHUTE_STEP": plan.step,
                "CHUTE_MODULE": plan.module,
                "CHUTE_ENTRY": marker,
                "TMPDIR": str(self.ws / ".tmp" / plan.label),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _spawner(self, plan: EntryPlan):
        if self.modules is None or plan.launcher == "fresh":
            return None
        return self.modules.spawn

    def _track(self, a: _Attempt) -> None:
        self.attempts[a.index] = a
        self.by_pid[a.proc.pid] = a
        for stream in a.proc.streams:
            self.sel.register(stream.fd, selectors.EVENT_READ, (a, stream))
        if a.proc.pidfd >= 0:
            self.sel.register(a.proc.pidfd, selectors.EVENT_READ, a)
        elif self.modules is not None:
            self.launcher_due = 0.0  # a warm module: watch over its launcher from now on
            if self.modules.fileno() == self.launcher_fd:
                return
            if self.launcher_fd >= 0:
                self.sel.unregister(self.launcher_fd)
            self.launcher_fd = self.modules.fileno()
            self.sel.register(self.launcher_fd, selectors.EVENT_READ, "launcher")

    # --- finishing ---

    def _finish(self, a: _Attempt) -> None:
        """An attempt is over (exited, pipes drained): succeeded, retried, failed, or deferred."""
        del self.attempts[a.index]
        self.by_pid.pop(a.proc.pid, None)
        for stream in a.proc.streams:
            if stream.fd >= 0:
                self.sel.unregister(stream.fd)
        a.proc.close()
        rec = self.records[a.index]
        code = a.proc.returncode
        rec.exit_code, rec.duration_s = code, rec.duration_s + a.proc.duration
        rec.log_tail = "\n".join(a.proc.stderr_tail)
        if self.verdict is not None:  # stopped because the step is already over (fail fast, cancel)
            rec.status = EntryStatus.CANCELLED
            return
        reason = a.reason or self._verify(rec.plan, code, a.proc.exit_reason)
        if reason is None:
            self._succeeded(rec, a)
            return
        fault = self._machine_fault(code, a, rec.log_tail)
        self._failed(rec, reason if fault is None else fault[0], None if fault is None else fault[1])

    def _succeeded(self, rec: EntryRecord, a: _Attempt) -> None:
        rec.status = EntryStatus.SUCCEEDED
        self.log.info(
            "entry.finished",
            step=rec.plan.step,
            module=rec.plan.module,
            exit_code=rec.exit_code,
            attempt=rec.attempts,
            duration_s=round(a.proc.duration, 3),
        )
        self.emit("entry.finished", label=rec.plan.label, module=rec.plan.module)

    def _failed(self, rec: EntryRecord, reason: str, fault: Fault | None) -> None:
        rec.reason = reason
        retrying = fault is None and rec.attempts <= rec.plan.retries
        self.log.warning(
            "entry.failed",
            step=rec.plan.step,
            module=rec.plan.module,
            exit_code=rec.exit_code,
            attempt=rec.attempts,
            reason=reason,
            retrying=retrying,
        )
        self.emit("entry.failed", label=rec.plan.label, module=rec.plan.module, reason=reason, retrying=retrying)
        if retrying:
            self._start(rec.plan.index)
            return
        rec.status = EntryStatus.FAILED
        error = failure(reason, rec.plan.step, rec.plan.module, rec.exit_code, rec.log_tail)
        self._fail(error, fault)

    def _fail(self, error: dict[str, Any], fault: Fault | None) -> None:
        """The step (and so the run) is over: fail fast, stopping the entries still running."""
        if self.verdict is None:
            self.verdict = ("deferred" if fault else "failed", error, fault)
        self._stop_all("cancelled", grace=self.spec.kill_grace)

    def _stop_all(self, status: str, grace: float) -> None:
        """SIGTERM every running attempt's group; SIGKILL follows after `grace` (their exits end the wait)."""
        for a in self.attempts.values():
            if a.drain_until is None and a.kill_at is None:
                a.reason = a.reason or status
                self._terminate(a, grace)
        if grace <= 0:  # an exception is unwinding: nothing will wait on the selector again
            for a in list(self.attempts.values()):
                a.proc.signal_group(signal.SIGKILL)
                if a.proc.popen is not None:
                    a.proc.popen.wait()
                self._sweep(a.proc.marker)
                a.proc.close()
            self.attempts.clear()

    def _verify(self, plan: EntryPlan, code: int | None, exit_reason: str | None) -> str | None:
        if code is None:
            return exit_reason or "its exit status is unknown"
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

    def _machine_fault(self, code: int | None, a: _Attempt, tail: str) -> tuple[str, Fault] | None:
        """Why a failure is the machine's, not the file's: then the run waits instead of being quarantined.

        A kill from outside (the OOM killer, a dead launcher) is a CRASH: it counts toward
        max_crashes, so a file that always exhausts memory is quarantined after a few tries.
        """
        if code is None and a.proc.exit_reason:
            return a.proc.exit_reason, Fault.CRASH  # the launcher died under it
        if code == -signal.SIGKILL and a.reason is None:
            return "killed by SIGKILL, not by chute (the kernel's OOM killer?)", Fault.CRASH
        try:
            st = os.statvfs(self.ws)
            free = st.f_bavail * st.f_frsize
        except OSError as exc:
            return f"the workspace is unavailable: {exc.strerror}", Fault.MACHINE
        if free < max(FULL_DISK, self.spec.work_reserve // 4):
            return f"the workspace's disk is full ({free >> 10} KiB free)", Fault.MACHINE
        hit = next((m for m in MACHINE_ERRORS if m in tail), None)
        return (f"{hit} in the workspace", Fault.MACHINE) if hit else None
