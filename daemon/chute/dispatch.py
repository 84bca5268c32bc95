"""Between the queue and the executor: runs made from claims, handed out, and their results taken back.

The daemon loop (service.py) calls this with what the intake claimed and what
recovery adopted; everything here returns or records values, and nothing
waits: the executor's futures wake the loop when a result is in.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from dataclasses import replace
from pathlib import Path

from . import claims, keep, logs
from .catalog import Catalog
from .config import Inbox
from .executor import ExecutorUnavailable, WorkerLost
from .executors import Executor
from .intake import Claimed
from .leases import Identity
from .queue import Active, RunQueue
from .recovery import Adopted
from .run import COMMIT_SUFFIX, Fault, Launch, RunResult, RunSpec, RunStatus

log = logs.get("chute.dispatch")
SYMLINK = "the file is a symbolic link; chute does not follow links out of an inbox"


class Dispatcher:
    def __init__(
        self, catalog: Catalog, me: Identity, environ: tuple, queue: RunQueue, executor: Executor, wake: threading.Event
    ):
        self.catalog, self.me, self.environ = catalog, me, environ
        self.queue, self.executor, self.wake = queue, executor, wake
        self.counts = {"done": 0, "failed": 0}
        self.swept: set[str] = set()  # dead daemons whose every process has been swept

    def spec(self, inbox: Inbox, run_id: str, claim: Path, name: str, poison: str | None = None) -> RunSpec:
        """The run of one claimed file, as the executor gets it (plain values)."""
        cfg = self.catalog.config
        return RunSpec(
            run_id=run_id,
            job=self.catalog.jobs[inbox.job],
            input_path=claim / name,
            input_name=name,
            outbox=inbox.outbox,
            quarantine=inbox.quarantine,
            work_dir=cfg.work_dir,
            owner=self.me.daemon_id,
            default_timeout=cfg.defaults.timeout,
            host=self.me.host,
            environ=self.environ,
            python=sys.executable,
            inbox=inbox.path,
            claim=claim,
            on_success=inbox.on_success,
            archive=inbox.archive,
            launch=Launch(cfg.launcher.mode, tuple(cfg.launcher.preload)),
            work_reserve=cfg.work_reserve,
            max_crashes=cfg.max_crashes,
            poison=poison,
            verify=inbox.verify,
            mhl=inbox.mhl,
            unit=inbox.unit,
        )

    def claimed(self, batch: list[Claimed], now: float) -> None:
        """Queue a run for each file the intake just claimed; if that fails (the ledger?), the files not
        queued go back where they were."""
        for i, c in enumerate(batch):
            spec = self.spec(c.inbox, c.run_id, c.claim, c.name, SYMLINK if c.symlink else c.poison)
            try:
                self.queue.add(Active(spec, c.inbox, now))
            except BaseException:
                for rest in batch[i:]:
                    with contextlib.suppress(OSError):  # else our next start's recovery takes it back
                        claims.release(rest.claim, rest.inbox.path)
                raise
            if spec.poison:  # the link itself was claimed; its run quarantines it, never reading its target
                log.warning("file.rejected", **spec.context(), reason=spec.poison)
            else:
                log.info("file.claimed", **spec.context())

    def adopted(self, a: Adopted, now: float) -> None:
        """Finish or run again a claim whose daemon died (contract §5: a crash loses nothing)."""
        self.executor.sweep(f"CHUTE_RUN_ID={a.run_id}")  # module processes the dead daemon left running
        if a.owner_gone and a.owner not in self.swept:
            # Everything it started carries its id: launchers, and what warm modules forked (whose
            # /proc environ is the launcher's, without the run's marker).
            self.executor.sweep(f"CHUTE_OWNER={a.owner}")
            self.swept.add(a.owner)
        if a.name is None and not a.claim.name.endswith(COMMIT_SUFFIX):
            claims.remove(a.claim)  # its input had left it: nothing to run, nothing to finish
            return
        crashed = a.crashes >= self.catalog.config.max_crashes
        poison = f"its daemon's host died during {a.crashes} runs of this file" if crashed else None
        spec = self.spec(a.inbox, a.run_id, a.claim.with_name(a.run_id), a.name or "input", poison)
        kept = keep.folder(spec.work_dir, a.run_id).is_dir()
        self.queue.add(Active(spec, a.inbox, now, crashes=a.crashes, kept=kept), front=True)

    def dispatch(self, now: float) -> None:
        """Hand ready runs to the executor while it has room."""
        while True:
            room = self.executor.free() > 0
            # A kept result's delivery needs no room in work_dir (kept results may be what fills it).
            if not room and not (any(a.kept for a in self.queue.pending) and self.executor.free(room=False) > 0):
                return
            active = self.queue.ready(now, kept_only=not room)
            if active is None:
                return
            try:
                future = self.executor.submit(active.spec)
            except Exception as exc:  # no worker could be started (EAGAIN, ENOMEM): it waits, charged nothing
                self.queue.defer(active, now, f"cannot start a worker: {type(exc).__name__}: {exc}", Fault.MACHINE)
                return
            future.add_done_callback(lambda _: self.wake.set())
            self.queue.started(active, future, self.executor.where(active.run_id))

    def collect(self, now: float) -> int:
        """Take back the results that are in; returns how many runs ended (a slot each)."""
        done = [(a, a.future) for a in self.queue.running.values() if a.future is not None and a.future.done()]
        for active, future in done:
            try:
                self._record(active, future.result(), now)
            except WorkerLost as exc:
                self._worker_lost(active, str(exc), now)
            except ExecutorUnavailable as exc:
                self.queue.defer(active, now, str(exc), Fault.OUTAGE)
            except Exception as exc:  # a bug in the worker: keep the claim, try again later
                log.error("run.error", **active.spec.context(), reason=f"{type(exc).__name__}: {exc}")
                self.queue.defer(active, now, f"{type(exc).__name__}: {exc}", Fault.MACHINE)
        return len(done)

    def _record(self, active: Active, result: RunResult, now: float) -> None:
        if result.status == RunStatus.DEFERRED:
            active.kept = result.kept
            self.queue.defer(active, now, result.reason, result.fault)
        elif result.status == RunStatus.RELEASED:
            self.queue.release(active)
        else:
            self.queue.finished(active, result)
            if result.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
                self.counts["done" if result.status == RunStatus.SUCCEEDED else "failed"] += 1

    def _worker_lost(self, active: Active, reason: str, now: float) -> None:
        """Its worker died: only this run is charged (a crash), and its modules are swept."""
        self.executor.sweep(f"CHUTE_RUN_ID={active.run_id}")
        try:
            active.crashes = claims.count_crash(active.claim)
        except OSError:
            active.crashes += 1
        if active.crashes >= self.catalog.config.max_crashes:
            why = f"{reason}; in {active.crashes} runs of this file"
            active.spec = replace(active.spec, poison=why)
        self.queue.defer(active, now, reason, Fault.CRASH)

    # --- a stop ---

    def release_waiting(self) -> None:
        """Waiting and deferred runs go back to their inboxes."""
        while self.queue.pending:
            self.queue.release(self.queue.pending.popleft())

    def release_paused(self, paused: frozenset[str]) -> None:
        """Runs claimed ahead from a paused inbox go back to it (a pause claims nothing more).

        Not an adopted run that had got further (a kept result, a committed claim, a crash): it finishes.
        """
        for active in [a for a in self.queue.pending if str(a.inbox.path) in paused]:
            if active.kept or active.crashes or active.claim.name.endswith(COMMIT_SUFFIX):
                continue
            self.queue.pending.remove(active)
            self.queue.release(active)

    def cancel_running(self) -> None:
        for run_id in self.queue.running:
            self.executor.cancel(run_id)

    def abandon(self) -> None:
        """Workers that did not stop in time: kill them; a committed claim waits for the next start's recovery."""
        log.error("executor.stuck", runs=sorted(self.queue.running))
        self.executor.kill()
        for active in list(self.queue.running.values()):
            self.executor.sweep(f"CHUTE_RUN_ID={active.run_id}")
            if active.claim.is_dir():  # not committed: nothing went out, it can go back now
                self.queue.release(active)
        self.queue.running.clear()
