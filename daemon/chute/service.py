"""The daemon loop: inboxes in, runs out to the executor, results recorded (contract §5, §8).

Signal handlers only queue the signal; `loop(now)` does one iteration and calls the handle_<signal> method
of each one queued; `serve()` sleeps until the next thing is due (a scan, a heartbeat, a deferred run, a stop
deadline) or something wakes it (a signal, an inotify hint, a finished run). The watching and claiming live
in intake.py, the leases and take-overs in recovery.py, the runs between queue and executor in dispatch.py.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from queue import SimpleQueue
from types import FrameType

from . import logs, reloading, signals
from .catalog import Catalog, load_catalog
from .config import Inbox
from .control import Control
from .dispatch import Dispatcher
from .errors import ChuteError, DefinitionError
from .executors import Executor, configured
from .intake import Intake
from .leases import Identity
from .ledger import Ledger
from .limits import raise_fd_limit
from .pruning import Pruner
from .queue import RunQueue
from .recovery import Adopted, Recovery, reconcile_ledger
from .retry import retrier
from .run import owned
from .statelock import StateLock
from .systemd import Notifier, module_environ, status_line
from .telemetry import Telemetry

log = logs.get("chute.service")
# Workers that have not stopped this long after their runs were cancelled (kill_grace) are killed.
STOP_MARGIN = 10.0
# A loop iteration that failed (a bug, an unforeseen OS error) is retried after a back-off that
# doubles from ERROR_BACKOFF_MIN up to ERROR_BACKOFF_MAX: a persistent error costs little CPU and log.
ERROR_BACKOFF_MIN, ERROR_BACKOFF_MAX = 0.1, 5.0
# SIGTERM and SIGINT stop gracefully (a second one cancels the runs in flight); SIGHUP reloads.
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stop(enum.Enum):
    RUNNING = "running"  # claiming and running
    DRAINING = "draining"  # no new claims; runs in flight may finish until shutdown_timeout
    CANCELLING = "cancelling"  # runs were told to stop; their inputs go back as they end
    STOPPED = "stopped"


class Service:
    def __init__(
        self, catalog: Catalog, notifier: Notifier | None = None, executor: Executor | None = None, clock=time.monotonic
    ):
        self.catalog, self.clock = catalog, clock
        # Before anything else (the socket, the ledger, the workers): one daemon per state_dir (contract §11).
        self.state_lock = StateLock.acquire(catalog.config.state_dir)
        self.notifier = notifier or Notifier()
        self.me = Identity.mine()
        self.wake = threading.Event()
        # Signals received and not yet handled: the handler only queues them (gunicorn's arbiter).
        self.signals: SimpleQueue[int] = SimpleQueue()
        self.stops = 0  # stop signals received: a second one cancels the runs in flight
        self.restore = contextlib.ExitStack()  # what start() installed and close() puts back
        self.state, self.stop_at = Stop.RUNNING, 0.0
        self.loop_errors = 0
        self.next_watchdog = 0.0
        self.next_look: float | None = None  # when the executor wants to look at its workers again
        cfg = catalog.config
        # On every process of ours (workers, launchers, modules), so a successor can sweep them all.
        self.environ = tuple(owned(module_environ(os.environ), self.me.daemon_id).items())
        self.ledger = Ledger(cfg.state_dir)
        self.pruner = Pruner(self.ledger)
        self.telemetry = Telemetry(cfg)
        self.queue = RunQueue(self.ledger, clock, self.telemetry)
        # The executor first: its workers must be started before the observer thread exists.
        self.executor = executor or configured(catalog, self.me, lambda: self.catalog.config)
        self.intake = Intake(self.me, self.wake, clock)
        self.recovery = Recovery(self.me, cfg.lease_timeout)
        self.runs = Dispatcher(catalog, self.me, self.environ, self.queue, self.executor, self.wake)
        self.control = Control(cfg.state_dir, self.wake, executor=self.executor, retry=retrier(cfg.state_dir))

    # --- start and stop ---

    def start(self) -> None:
        self.restore.enter_context(signals.installed(self._on_signal, SIGNALS))
        cfg = self.catalog.config
        fd_limit = raise_fd_limit()  # after the pool's workers started: they and their modules keep the old one
        for inbox in cfg.inboxes:
            self.intake.add(inbox, self.catalog.config)
        self.intake.start()
        self.telemetry.start()
        self.control.start()
        self._adopt(self.recovery.heartbeat(self.clock(), self._leased(), self._watched(), force=True))
        self._reconcile()
        log.info(
            "daemon.started",
            pid=os.getpid(),
            daemon=self.me.daemon_id,
            config=str(self.catalog.config_file),
            inboxes=[str(i.path) for i in cfg.inboxes],
            workers=cfg.workers,
            fd_limit=fd_limit,
        )
        self.notifier.ready()
        self._status()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Queue the signal for the loop, which calls its handle_* method: a handler does nothing else."""
        self.signals.put(signum)
        self.wake.set()

    def serve(self) -> None:
        """Run until stopped by a signal."""
        self.start()
        try:
            while True:
                self.wake.clear()  # before the iteration: a wake-up during it makes the next come at once
                try:
                    self.loop(self.clock())
                    self.loop_errors = 0
                except Exception as exc:  # a bug or an unforeseen OS error: log it, keep the files safe, go on
                    self.loop_errors += 1
                    log.exception("daemon.error", reason=f"{type(exc).__name__}: {exc}", consecutive=self.loop_errors)
                    self.telemetry.daemon_error(f"{type(exc).__name__}: {exc}")
                    self.wake.wait(min(ERROR_BACKOFF_MAX, ERROR_BACKOFF_MIN * 2 ** (self.loop_errors - 1)))
                if self.state == Stop.STOPPED:
                    break
                self.wake.wait(max(0.0, self.next_due() - self.clock()))
        finally:
            self.close()

    def close(self) -> None:
        """Stop every part, each in its own try (huey's consumer): one that fails is logged and skips none."""
        parts: tuple[tuple[str, Callable[[], object]], ...] = (
            ("control", self.control.close),
            ("leases", self._release),
            ("intake", self.intake.stop),
            ("executor", self.executor.close),
            ("telemetry", self.telemetry.close),
            ("ledger", self.ledger.close),
            ("notifier", self.notifier.close),
            ("signals", self.restore.close),
            ("state_dir lock", self.state_lock.release),
        )
        for part, stop in parts:
            try:
                stop()
            except Exception as exc:  # a bug or an OS error in one part: the others still stop
                log.exception("daemon.stop_failed", part=part, reason=f"{type(exc).__name__}: {exc}")
        log.info("daemon.stopped")

    def _release(self) -> None:
        self.recovery.release(self._leased())

    # --- one iteration ---

    def loop(self, now: float) -> None:
        while not self.signals.empty():
            signum = self.signals.get()
            getattr(self, f"handle_{signal.Signals(signum).name[3:].lower()}")(now)
        take_over = self.state == Stop.RUNNING  # the runs draining are still ours: their leases stay fresh
        self._adopt(self.recovery.heartbeat(now, self._leased(), self._watched(), take_over=take_over))
        self.next_look = self.executor.supervise(now)  # a frozen worker's run fails as WorkerLost (a crash)
        if self.runs.collect(now):
            self.intake.hint()  # slots are free: claim what has settled meanwhile
        pauses = self.control.take([str(p) for p in self.intake.watchers])
        if pauses.resumed_now:
            self.intake.hint()
        # Outside its schedule (contract §11) an inbox claims nothing, as if paused; runs in flight finish.
        outside = self.intake.scheduled(now, datetime.now(UTC))
        if self.state == Stop.RUNNING:
            self.runs.release_paused(pauses.paused | outside)
            self.runs.dispatch(now)  # runs claimed ahead start first; then the places they left are claimed
            self._take_files(now, pauses.paused | outside)
            self.runs.dispatch(now)
        else:
            self._drain(now)
        self._status()
        self._watchdog(now)
        self.pruner.tick(now, self.catalog.config.ledger.keep_days)
        states = self.intake.states()
        self.telemetry.tick(
            now,
            len(self.queue.pending),
            len(self.queue.running),
            self.queue.oldest(now),
            states,
            pauses.paused,
            outside,
        )
        self.control.publish(self.state.value, self.queue.running.values(), self.queue.pending, states)

    def next_due(self) -> float:
        """When the loop has something to do, if nothing wakes it first."""
        now = self.clock()
        due = [self.intake.next_due(), self.recovery.next_beat, self.queue.next_due(now) or float("inf")]
        if self.next_look is not None:
            due.append(self.next_look)
        if self.notifier.watchdog_interval is not None:
            due.append(self.next_watchdog)
        if self.state in (Stop.DRAINING, Stop.CANCELLING):
            due.append(self.stop_at)
        return min(due)

    # --- signals, as the loop handles them ---

    def handle_term(self, now: float) -> None:
        """Stop gracefully: no new claims, the runs in flight drain; a second stop signal cancels them."""
        self.stops += 1
        if self.state == Stop.RUNNING:
            self._begin_stop(now)

    handle_int = handle_term

    def handle_hup(self, now: float) -> None:
        """Reload the configuration and the jobs (not while stopping)."""
        if self.state == Stop.RUNNING:
            self.reload()

    # --- claiming and running ---

    def _take_files(self, now: float, paused: frozenset[str] = frozenset()) -> None:
        # Runs claimed ahead wait for this daemon's workers: not while a peer shares an inbox (it may be idle).
        ahead = 0 if self.recovery.shared else self.executor.ahead()
        capacity = self.executor.free() + ahead - self.queue.waiting(now)
        was_short = self.intake.short_of
        claimed, changes = self.intake.look(now, capacity, paused)
        if self.intake.short_of is not None and was_short is None:
            self.telemetry.daemon_error(f"short of resources: {self.intake.short_of}")
        for change in changes:
            if change.available:
                self.queue.retry_now(change.inbox)
            else:
                self.telemetry.inbox_unavailable(str(change.inbox), change.reason)
        self.runs.claimed(claimed, now)

    # --- leases, take-over and recovery ---

    def _leased(self) -> set[Path]:
        """Inboxes we hold a lease in: the watched ones, and any a run of ours still has a claim in."""
        return set(self.intake.watchers) | self.queue.inboxes()

    def _watched(self) -> dict[Path, Inbox]:
        return {path: w.inbox for path, w in self.intake.watchers.items()}

    def _adopt(self, adopted: list[Adopted]) -> None:
        for a in adopted:
            self.telemetry.taken_over(str(a.inbox.path))
            self.runs.adopted(a, self.clock())

    def _reconcile(self) -> None:
        """Ledger rows a dead daemon of ours left queued or running, and not adopted: what became of them."""
        held = {a.run_id for a in [*self.queue.pending, *self.queue.running.values()]}
        reconcile_ledger(self.ledger, held, {i.path: i for i in self.catalog.config.inboxes})

    def reload(self) -> None:
        """SIGHUP: the config file again; inboxes added, changed or removed, the rest at the next restart."""
        self.notifier.reloading()
        try:
            new = load_catalog(self.catalog.config_file)
        except ChuteError as exc:
            problems = [str(p) for p in exc.problems] if isinstance(exc, DefinitionError) else [str(exc)]
            log.error("daemon.reload_failed", problems=problems)
            self.notifier.ready()
            return
        change = reloading.compare(self.catalog.config, new.config)
        self.catalog = self.runs.catalog = new
        self.telemetry.reconfigure(new.config)
        for path in change.stop:
            self.intake.remove(path)  # its lease stays while runs of ours hold claims in it (_leased)
        for inbox in change.start:
            self.intake.add(inbox, new.config)
        log.info(
            "daemon.reloaded",
            inboxes=[str(i.path) for i in new.config.inboxes],
            jobs=sorted(new.jobs),
            added=[str(p) for p in change.added],
            removed=[str(p) for p in change.removed],
            needs_restart=change.needs_restart or None,
        )
        self.notifier.ready()

    # --- stopping ---

    def _begin_stop(self, now: float) -> None:
        cfg = self.catalog.config
        self.state, self.stop_at = Stop.DRAINING, now + cfg.shutdown_timeout
        self.notifier.stopping()
        self.notifier.extend_timeout(cfg.shutdown_timeout + self._grace() + STOP_MARGIN)
        log.info(
            "daemon.stopping",
            running=len(self.queue.running),
            queued=len(self.queue.pending),
            timeout=cfg.shutdown_timeout,
        )

    def _drain(self, now: float) -> None:
        self.runs.release_waiting()
        if not self.queue.running:
            self.state = Stop.STOPPED
        elif self.state == Stop.DRAINING and (self.stops > 1 or now >= self.stop_at):
            self.state, self.stop_at = Stop.CANCELLING, now + self._grace() + STOP_MARGIN
            log.info("daemon.cancelling", runs=sorted(self.queue.running))
            self.runs.cancel_running()
        elif self.state == Stop.CANCELLING and now >= self.stop_at:
            self.runs.abandon()
            self.state = Stop.STOPPED

    def _grace(self) -> float:
        return max((a.spec.kill_grace for a in self.queue.running.values()), default=0.0)

    # --- systemd ---

    def _status(self) -> None:
        q, counts = self.queue, self.runs.counts
        waiting = len(q.pending) - q.waiting(self.clock())  # deferred, backing off
        paused, outside = len(self.control.taken), len(self.intake.outside)
        self.notifier.status(
            status_line(len(q.pending), len(q.running), counts["done"], counts["failed"], waiting, paused, outside)
        )

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


def run_daemon(catalog: Catalog) -> None:
    try:
        service = Service(catalog)
    except OSError as exc:
        raise ChuteError(f"cannot start: {exc.strerror or exc}: {exc.filename or ''}") from exc
    service.serve()
