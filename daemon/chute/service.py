"""The daemon loop: inboxes in, runs out to the executor, results recorded (SPEC §5, §8).

Signal handlers only set flags; `loop(now)` does one iteration and acts on them;
`serve()` sleeps until the next thing is due (a scan, a heartbeat, a deferred
run, a stop deadline) or something wakes it (a signal, an inotify hint, a
finished run). The watching lives in intake.py, the leases and take-overs in
recovery.py, the queue in queue.py, the runs in the executor.
"""

from __future__ import annotations

import enum
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from . import claims, logs, staging
from .catalog import Catalog, load_catalog
from .config import Config, Inbox
from .entry import sweep
from .errors import ChuteError, DefinitionError
from .executor import Executor, ExecutorUnavailable, LocalExecutor, WorkerLost
from .intake import Claimed, Intake
from .leases import Identity
from .ledger import Ledger, State
from .queue import Active, RunQueue
from .recovery import Adopted, Recovery, reconcile
from .run import COMMIT_SUFFIX, Fault, Launch, RunResult, RunSpec, RunStatus, failure, utcnow
from .systemd import Notifier, module_environ, status_line

log = logs.get("chute.service")
# Workers that have not stopped this long after their runs were cancelled (kill_grace) are killed.
STOP_MARGIN = 10.0
# A loop iteration that failed (a bug, an unforeseen OS error) is retried after a back-off up to this.
ERROR_BACKOFF_MAX = 5.0


class Stop(enum.Enum):
    RUNNING = "running"  # claiming and running
    DRAINING = "draining"  # no new claims; runs in flight may finish until shutdown_timeout
    CANCELLING = "cancelling"  # runs were told to stop; their inputs go back as they end
    STOPPED = "stopped"


class Service:
    def __init__(self, catalog: Catalog, notifier: Notifier | None = None, executor: Executor | None = None,
                 clock=time.monotonic):
        self.catalog, self.clock = catalog, clock
        self.notifier = notifier or Notifier()
        self.me = Identity.mine()
        self.wake = threading.Event()
        self.flags = {"stop": 0, "reload": False}
        self.state, self.stop_at = Stop.RUNNING, 0.0
        self.counts = {"done": 0, "failed": 0}
        self.loop_errors = 0
        self.next_watchdog = 0.0
        cfg = catalog.config
        self.environ = tuple(module_environ(os.environ).items())
        self.ledger = Ledger(cfg.state_dir)
        self.queue = RunQueue(self.ledger)
        staging.owner_dir(cfg.work_dir, self.me, self.me.daemon_id)
        # The executor first: its workers must be started before the observer thread exists.
        self.executor = executor or _executor(catalog, lambda: self.catalog.config)
        self.intake = Intake(self.me, self.wake, clock)
        self.recovery = Recovery(self.me, cfg.lease_timeout)

    # --- start and stop ---

    def start(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)
        cfg = self.catalog.config
        for inbox in cfg.inboxes:
            self._add_inbox(inbox)
        self.intake.start()
        for folder in staging.remove_dead_owners(cfg.work_dir):
            log.info("work.removed", workspace=str(folder))
        self._adopt_all(self.recovery.heartbeat(self.clock(), self._leased(), self._watched(), force=True))
        self._reconcile()
        log.info("daemon.started", pid=os.getpid(), daemon=self.me.daemon_id, config=str(self.catalog.config_file),
                 inboxes=[str(i.path) for i in cfg.inboxes], workers=cfg.workers)
        self.notifier.ready()
        self._status()

    def _on_stop_signal(self, signum, frame) -> None:
        self.flags["stop"] += 1
        self.wake.set()

    def _on_reload_signal(self, signum, frame) -> None:
        self.flags["reload"] = True
        self.wake.set()

    def serve(self) -> None:
        """Run until stopped by a signal."""
        self.start()
        try:
            while self.state != Stop.STOPPED:
                try:
                    self.loop(self.clock())
                    self.loop_errors = 0
                except Exception as exc:  # a bug or an unforeseen OS error: log it, keep the files safe, go on
                    self.loop_errors += 1
                    log.exception("daemon.error", reason=f"{type(exc).__name__}: {exc}", consecutive=self.loop_errors)
                    self.wake.wait(min(ERROR_BACKOFF_MAX, 0.1 * 2 ** min(self.loop_errors, 6)))
                self.wake.wait(max(0.0, self.next_due() - self.clock()))
                self.wake.clear()
        finally:
            self.close()

    def close(self) -> None:
        self.recovery.release(self._leased())
        self.intake.stop()
        self.executor.close()
        self.ledger.close()
        self.notifier.close()
        log.info("daemon.stopped")

    # --- one iteration ---

    def loop(self, now: float) -> None:
        if self.flags["reload"] and self.state == Stop.RUNNING:
            self.flags["reload"] = False
            self.reload()
        if self.flags["stop"] and self.state == Stop.RUNNING:
            self._begin_stop(now)
        take_over = self.state == Stop.RUNNING  # the runs draining are still ours: their leases stay fresh
        self._adopt_all(self.recovery.heartbeat(now, self._leased(), self._watched(), take_over=take_over))
        if self.state == Stop.RUNNING:
            self._take_files(now)
            self._dispatch(now)
        else:
            self._drain(now)
        self._collect(now)
        self._status()
        self._watchdog(now)

    def next_due(self) -> float:
        """When the loop has something to do, if nothing wakes it first."""
        now = self.clock()
        due = [self.intake.next_due(), self.recovery.next_beat, self.queue.next_due(now) or float("inf")]
        if self.notifier.watchdog_interval is not None:
            due.append(self.next_watchdog)
        if self.state in (Stop.DRAINING, Stop.CANCELLING):
            due.append(self.stop_at)
        return min(due)

    # --- claiming and running ---

    def _take_files(self, now: float) -> None:
        capacity = self.executor.free() - self.queue.waiting(now)
        if capacity > 0 and not self._work_dir_has_room():
            capacity = 0
        claimed, changes = self.intake.look(now, capacity)
        for change in changes:
            if change.available:
                self.queue.retry_now(change.inbox)
        for c in claimed:
            self._queue_claim(c, now)

    def _work_dir_has_room(self) -> bool:
        try:
            return staging.free_bytes(self.catalog.config.work_dir) >= self.catalog.config.work_reserve
        except OSError:
            return False

    def _queue_claim(self, c: Claimed, now: float) -> None:
        poison = "the file is a symbolic link; chute does not follow links out of an inbox" if c.symlink else None
        spec = self._spec(c.inbox, c.run_id, c.claim, c.name, poison)
        try:
            self.queue.add(Active(spec, c.inbox, now))
        except BaseException:
            claims.release(c.claim, c.inbox.path)  # not queued (the ledger failed?): back where it was
            raise
        if poison:  # the link itself was claimed; its run quarantines it, never reading its target
            log.warning("file.rejected", **spec.context(), reason=poison)
        else:
            log.info("file.claimed", **spec.context())

    def _spec(self, inbox: Inbox, run_id: str, claim: Path, name: str, poison: str | None = None) -> RunSpec:
        cfg = self.catalog.config
        return RunSpec(
            run_id=run_id, job=self.catalog.jobs[inbox.job], input_path=claim / name, input_name=name,
            outbox=inbox.outbox, quarantine=inbox.quarantine, work_dir=cfg.work_dir, owner=self.me.daemon_id,
            default_timeout=cfg.defaults.timeout, host=self.me.host, environ=self.environ, python=sys.executable,
            inbox=inbox.path, claim=claim, on_success=inbox.on_success, archive=inbox.archive,
            launch=Launch(cfg.launcher.mode, tuple(cfg.launcher.preload)), work_reserve=cfg.work_reserve,
            max_crashes=cfg.max_crashes, poison=poison,
        )

    def _dispatch(self, now: float) -> None:
        while self.executor.free() > 0:
            active = self.queue.ready(now)
            if active is None:
                return
            future = self.executor.submit(active.spec)
            future.add_done_callback(lambda _: self.wake.set())
            self.queue.started(active, future, self.executor.where(active.run_id))

    def _collect(self, now: float) -> None:
        for active in [a for a in self.queue.running.values() if a.future.done()]:
            try:
                result = active.future.result()
            except WorkerLost as exc:
                self._worker_lost(active, str(exc), now)
                continue
            except ExecutorUnavailable as exc:
                self._deferred(active, now, str(exc), Fault.OUTAGE)
                continue
            except Exception as exc:  # a bug in the worker: keep the claim, try again later
                log.error("run.error", **active.spec.context(), reason=f"{type(exc).__name__}: {exc}")
                self._deferred(active, now, f"{type(exc).__name__}: {exc}", Fault.MACHINE)
                continue
            self._record(active, result, now)

    def _record(self, active: Active, result: RunResult, now: float) -> None:
        if result.status == RunStatus.DEFERRED:
            self._deferred(active, now, result.reason, result.fault)
            return
        if result.status == RunStatus.RELEASED:
            self._release(active)
            return
        self.queue.finished(active, result)
        if result.status == RunStatus.SUCCEEDED:
            self.counts["done"] += 1
        elif result.status == RunStatus.FAILED:
            self.counts["failed"] += 1
        self.intake.hint()  # a slot is free: claim what has settled meanwhile

    def _deferred(self, active: Active, now: float, reason: str, fault: Fault | None) -> None:
        delay = self.queue.defer(active, now, backoff=fault != Fault.CRASH)
        log.warning("run.deferred", **active.spec.context(), reason=reason, fault=fault and fault.value,
                    retry_in_s=delay)

    def _worker_lost(self, active: Active, reason: str, now: float) -> None:
        """Its worker died: only this run is charged (a crash), and its modules are swept."""
        sweep(f"CHUTE_RUN_ID={active.run_id}")
        try:
            active.crashes = claims.count_crash(active.spec.claim)
        except OSError:
            active.crashes += 1
        if active.crashes >= self.catalog.config.max_crashes:
            why = f"{reason}; the worker died during {active.crashes} runs of this file"
            active.spec = replace(active.spec, poison=why)
        self._deferred(active, now, reason, Fault.CRASH)

    def _release(self, active: Active) -> None:
        spec = active.spec
        if claims.taken(spec.claim):  # another daemon took it over (we were frozen): not ours to put back
            self.queue.ended(active, State.DISCARDED, error=failure("another daemon took over this claim"))
            return
        try:
            back = claims.release(spec.claim, active.inbox.path)
        except OSError as exc:
            self.queue.running.pop(active.run_id, None)
            log.error("run.release_failed", **spec.context(), reason=exc.strerror or str(exc))
            return
        self.queue.ended(active, State.RELEASED, back)
        log.info("run.released", **spec.context(), to=None if back is None else str(back))

    # --- leases, take-over and recovery ---

    def _leased(self) -> set[Path]:
        """Inboxes we hold a lease in: the watched ones, and any a run of ours still has a claim in."""
        return set(self.intake.watchers) | self.queue.inboxes()

    def _watched(self) -> dict[Path, Inbox]:
        return {path: w.inbox for path, w in self.intake.watchers.items()}

    def _adopt_all(self, adopted: list[Adopted]) -> None:
        for a in adopted:
            self._adopt(a)

    def _adopt(self, a: Adopted) -> None:
        """Finish or run again a claim whose daemon died (SPEC §5: a crash loses nothing)."""
        sweep(f"CHUTE_RUN_ID={a.run_id}")  # module processes the dead daemon left running
        if a.name is None and not a.claim.name.endswith(COMMIT_SUFFIX):
            claims.remove(a.claim)
            return
        plain = a.claim.with_name(a.run_id)
        poison = f"the daemon died during {a.crashes} runs of this file" if a.crashes >= self.catalog.config.max_crashes else None
        spec = self._spec(a.inbox, a.run_id, plain, a.name or "input", poison)
        self.queue.add(Active(spec, a.inbox, self.clock(), crashes=a.crashes), front=True)

    def _reconcile(self) -> None:
        """Ledger rows a dead daemon of ours left queued or running, and not adopted: what became of them."""
        held = {a.run_id for a in [*self.queue.pending, *self.queue.running.values()]}
        inboxes = {i.path: i for i in self.catalog.config.inboxes}
        for run in self.ledger.active():
            if run.run_id not in held:
                state, result, error = reconcile(run, inboxes)
                self.ledger.finished(run.run_id, state, utcnow(), None if result is None else str(result), error or None)
                log.info("run.reconciled", run_id=run.run_id, job=run.job, inbox=run.inbox, file=run.input_name,
                         state=state.value, result=None if result is None else str(result))

    # --- reload ---

    def reload(self) -> None:
        self.notifier.reloading()
        try:
            new = load_catalog(self.catalog.config_file)
        except ChuteError as exc:
            problems = [str(p) for p in exc.problems] if isinstance(exc, DefinitionError) else [str(exc)]
            log.error("daemon.reload_failed", problems=problems)
            self.notifier.ready()
            return
        old = {i.path: i for i in self.catalog.config.inboxes}
        now = {i.path: i for i in new.config.inboxes}
        restart_needed = [k for k in ("state_dir", "work_dir", "workers", "executor")
                          if getattr(new.config, k) != getattr(self.catalog.config, k)]
        self.catalog = new
        for path in set(old) - set(now):
            self.intake.remove(path)  # its lease stays while runs of ours hold claims in it (_leased)
        for path, inbox in now.items():
            if path in old and inbox != old[path]:
                self.intake.remove(path)
            if path not in old or inbox != old[path]:
                self._add_inbox(inbox)
        log.info("daemon.reloaded", inboxes=[str(p) for p in now], jobs=sorted(new.jobs),
                 added=[str(p) for p in set(now) - set(old)], removed=[str(p) for p in set(old) - set(now)],
                 needs_restart=restart_needed or None)
        self.notifier.ready()

    def _add_inbox(self, inbox: Inbox) -> None:
        # Created at start (SPEC §4); a delivery never creates them (an unmounted share must stay absent).
        for folder in (inbox.path, inbox.outbox, inbox.quarantine, inbox.archive):
            if folder is not None:
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    log.warning("inbox.unavailable", inbox=str(inbox.path), folder=str(folder), reason=exc.strerror)
        self.intake.add(inbox, self.catalog.config)

    # --- stopping ---

    def _begin_stop(self, now: float) -> None:
        cfg = self.catalog.config
        self.state, self.stop_at = Stop.DRAINING, now + cfg.shutdown_timeout
        self.notifier.stopping()
        self.notifier.extend_timeout(cfg.shutdown_timeout + self._grace() + STOP_MARGIN)
        log.info("daemon.stopping", running=len(self.queue.running), queued=len(self.queue.pending),
                 timeout=cfg.shutdown_timeout)

    def _drain(self, now: float) -> None:
        while self.queue.pending:  # waiting and deferred runs go back to their inboxes
            self._release(self.queue.pending.popleft())
        if not self.queue.running:
            self.state = Stop.STOPPED
        elif self.state == Stop.DRAINING and (self.flags["stop"] > 1 or now >= self.stop_at):
            self.state, self.stop_at = Stop.CANCELLING, now + self._grace() + STOP_MARGIN
            log.info("daemon.cancelling", runs=sorted(self.queue.running))
            for run_id in self.queue.running:
                self.executor.cancel(run_id)
        elif self.state == Stop.CANCELLING and now >= self.stop_at:
            self._abandon()

    def _grace(self) -> float:
        return max((a.spec.kill_grace for a in self.queue.running.values()), default=0.0)

    def _abandon(self) -> None:
        """Workers that did not stop in time: kill them; their claims wait for the next start's recovery."""
        log.error("executor.stuck", runs=sorted(self.queue.running))
        self.executor.kill()
        for active in list(self.queue.running.values()):
            sweep(f"CHUTE_RUN_ID={active.run_id}")
            if active.spec.claim.is_dir():  # not committed: nothing went out, it can go back now
                self._release(active)
        self.queue.running.clear()
        self.state = Stop.STOPPED

    # --- systemd ---

    def _status(self) -> None:
        self.notifier.status(status_line(len(self.queue.pending), len(self.queue.running),
                                         self.counts["done"], self.counts["failed"]))

    def healthy(self) -> bool:
        # A loop that keeps failing is not making progress: let systemd's watchdog restart it.
        return self.intake.healthy() and self.executor.healthy() and self.loop_errors < 3

    def _watchdog(self, now: float) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None or now < self.next_watchdog:
            return
        if self.healthy():
            self.notifier.watchdog()
            self.next_watchdog = now + interval


def _executor(catalog: Catalog, current: Callable[[], Config]) -> Executor:
    """The configured executor; `current()` is the config in force (reloads change the folders a Dask worker must see)."""
    cfg = catalog.config
    if cfg.executor.kind == "dask":
        try:
            from .dask_executor import DaskExecutor
        except ImportError as exc:
            raise ChuteError(f"executor.kind 'dask' needs Dask ({exc.name} is missing): pip install 'chute[dask]'")
        return DaskExecutor(current)
    return LocalExecutor(cfg.workers, cfg.log.format, cfg.log.level)


def run_daemon(catalog: Catalog) -> None:
    try:
        service = Service(catalog)
    except OSError as exc:
        raise ChuteError(f"cannot start: {exc.strerror or exc}: {exc.filename or ''}") from exc
    service.serve()
