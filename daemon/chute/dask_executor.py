"""Runs on a Dask cluster: the Executor surface (executor.py) over a `distributed.Client`.

The daemon stays the only watcher and claimer; each run is one Dask task
(`dask_worker.run`) placed by us on a worker with a free thread, so `where()`
knows it at once and `free()` counts exactly. A monitor thread keeps the
picture of the cluster: workers joining (probed for the shared folders before
they get a run), workers leaving (their runs fail with `WorkerLost` if they had
started, `ExecutorUnavailable` if not), the scheduler going away (every run in
flight is deferred, `free()` is 0 until a new connection is made). Results come
back as Dask futures and are handed over as concurrent.futures ones, so the
service needs no Dask knowledge.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial

from distributed import Client, KilledWorker
from distributed import Future as DaskFuture
from distributed.utils import LoopRunner

from . import claims, dask_client, dask_worker, entry, logs, progress
from .config import Config
from .dask_client import reason as _reason
from .dask_probes import Probes
from .executor import ExecutorUnavailable, WorkerLost
from .membership import Membership, Run
from .run import RunSpec

log = logs.get("chute.executor")
MONITOR_INTERVAL = 1.0  # seconds between looks at the cluster's workers (and tries to reconnect)
RECONNECT_MAX = 10.0  # seconds between tries to reach a scheduler that is gone, at most
REPROBE = 30.0  # seconds between probes of a refused worker (its share may be mounted since)


class DaskExecutor:
    """Runs on the Dask cluster `current().executor` names; every worker must see its inboxes and modules."""

    def __init__(self, current: Callable[[], Config]):
        cfg = current()
        self.config, self.current = cfg.executor, current
        self.plugin = dask_worker.ChutePlugin(str(cfg.work_dir), cfg.log.format, cfg.log.level)
        self.lock = threading.Lock()  # guards `client`, which the monitor thread replaces
        self.cluster = Membership()  # the workers, their verdicts, the runs on each: changed there only
        self.probes = Probes(self.cluster, current)  # the monitor thread's
        self.topic = f"chute.events.{secrets.token_hex(4)}"  # this daemon's runs' events, relayed to its log
        self.live: dict[str, dict] = {}  # run_id: its last progress message (written on the client's loop)
        self.wake, self.closing = threading.Event(), False
        self.retry_in = MONITOR_INTERVAL
        dask_client.quiet_dask()
        # One event loop thread for every client this executor makes: Dask's own, started per
        # client, stays behind each time a connection attempt fails (and a lost scheduler means many).
        self.loop = LoopRunner(asynchronous=False)
        self.loop.start()
        try:
            self.client: Client | None = dask_client.first_connect(self.config, self.loop.loop, self.plugin, self.topic)
            self.client.subscribe_topic(progress.topic(self.topic), self._progressed)
        except BaseException:
            self.loop.stop()
            raise
        self.thread = threading.Thread(target=self._monitor, name="chute-dask", daemon=True)
        self.thread.start()

    # --- the daemon's side (its loop thread) ---

    def ahead(self) -> int:
        return 0  # a run's claim costs little next to its trip through the scheduler

    def free(self, room: bool = True) -> int:
        client = self.client
        if client is None or client.status != "running":
            return 0  # the scheduler is gone (or being reached again): claim nothing meanwhile
        return self.cluster.free()

    def submit(self, spec: RunSpec) -> Future:
        future: Future = Future()
        client = self.client
        if client is None or client.status != "running":
            future.set_exception(ExecutorUnavailable("no Dask worker is free"))
            return future
        run = self.cluster.place(spec, future, f"chute-run-{spec.run_id}-{secrets.token_hex(3)}")
        if isinstance(run, str):
            future.set_exception(ExecutorUnavailable(run))
            return future
        try:
            task = client.submit(
                dask_worker.run,
                spec,
                run.worker_id,
                run.key,
                self.topic,
                key=run.key,
                workers=[run.worker],
                allow_other_workers=False,
                pure=False,
                retries=0,
            )
        except Exception as exc:  # the connection went in between
            self._settle(run, error=ExecutorUnavailable(f"cannot reach the Dask scheduler: {_reason(exc)}"))
            return future
        if not self.cluster.submitted(run, task):  # its worker left meanwhile: the run ended without it
            task.cancel(force=True, reason="chute: its worker left")
            task.release()
            return future
        task.add_done_callback(partial(self._done, run))
        return future

    def cancel(self, run_id: str) -> None:
        self._tell(run_id, dask_worker.cancel_run)

    def where(self, run_id: str) -> str | None:
        run = self.cluster.run(run_id)
        return None if run is None else run.worker

    def sweep(self, marker: str) -> None:
        """Kill what a dead daemon's runs left (by their marker): here, and on every worker (not waited for)."""
        entry.sweep(marker)
        with self.lock:
            client = self.client
        if client is None or client.status != "running":
            return  # a worker that lost its scheduler stops its runs itself; one that restarts sweeps (the plugin)
        # Client.run's own coroutine, on the client's loop: Client.run would hold the daemon's loop for the
        # scheduler's round trip. Out of band, not a task: a worker whose threads are all busy sweeps at once.
        # wait=False needs a coroutine function on the worker (distributed's worker.run asserts it).
        sent = asyncio.run_coroutine_threadsafe(
            client._run(dask_worker.sweep, marker, wait=False), self.loop.loop.asyncio_loop
        )
        sent.add_done_callback(partial(_sweep_sent, marker))

    def supervise(self, now: float) -> float | None:
        """Nothing to do: Dask workers are Dask's to supervise (one stopped by a module is not caught here)."""
        return None

    def healthy(self) -> bool:
        return self.thread.is_alive()

    def progress(self) -> dict[str, dict]:
        with self.lock:
            for run_id in [r for r in self.live if self.cluster.run(r) is None]:  # ended, or a late message
                del self.live[run_id]
            return dict(self.live)

    def workers(self) -> list[dict]:
        """Each Dask worker as the scheduler last told (it drops one that stops beating): state, threads, runs,
        and the age of its last heartbeat to the scheduler (by the scheduler's clock against ours: NTP's business)."""
        now = time.time()
        with self.cluster.lock:
            found = [
                (a, w.state if w.running else "paused", w.nthreads, len(w.runs), w.last_seen)
                for a, w in self.cluster.workers.items()
            ]
        return [
            {"worker": a, "state": state, "nthreads": n, "runs": runs, "heartbeat_age_s": _age(now, seen)}
            for a, state, n, runs, seen in sorted(found, key=lambda row: row[0])
        ]

    def _progressed(self, event: tuple[float, dict]) -> None:
        """A run's progress message, sent by its worker as a Dask event (dask_worker.WorkerState.execute)."""
        message = event[1]
        if isinstance(message, dict) and self.cluster.run(str(message.get("run_id"))) is not None:
            with self.lock:
                self.live[message["run_id"]] = message

    def kill(self) -> None:
        """Stop every run at once: its modules killed on its worker, its task forgotten by the cluster."""
        for run in self.cluster.all_runs():
            self._tell(run.spec.run_id, dask_worker.kill_run, run.spec.run_id)
            self._settle(run, error=ExecutorUnavailable("stopped"))

    def close(self) -> None:
        self.closing = True
        self.wake.set()
        self.thread.join(timeout=10)
        with self.lock:
            client, self.client = self.client, None
        self._drop_runs("the daemon stopped")
        if client is not None:
            client.close(timeout=5)
        self.loop.stop()

    def _tell(self, run_id: str, function: Callable[..., object], *args: object) -> None:
        """Call `function(key, *args)` in the worker process of the run (Client.run, not a task: it never waits)."""
        run, client = self.cluster.run(run_id), self.client
        if run is None or client is None:
            return
        try:
            client.run(function, run.key, *args, workers=[run.worker], wait=False)
        except Exception as exc:  # the scheduler is gone: its workers stop their runs themselves
            log.warning("executor.cancel_failed", run_id=run_id, worker=run.worker, reason=_reason(exc))

    # --- results, from Dask's callback thread ---

    def _done(self, run: Run, task: DaskFuture) -> None:
        if not self.cluster.current(run):
            return  # settled already: its worker left, or the connection was lost
        try:
            if task.status == "finished":
                self._settle(run, result=task.result())
            elif task.status == "error":
                self._settle(run, error=_lost(task.exception(), run.worker))
            elif getattr(getattr(task._state, "exception", None), "reason", None) == "scheduler-connection-lost":
                self.cluster.add_stale([run.spec.run_id])
                self._settle(run, error=ExecutorUnavailable("the connection to the Dask scheduler was lost"))
            else:  # the cluster dropped it (forgotten, cancelled by someone else)
                self._settle(run, error=_vanished(run, f"its task was dropped by the Dask cluster on {run.worker}"))
        except Exception as exc:  # the result could not be fetched: the claim says what became of the run
            self._settle(run, error=ExecutorUnavailable(f"its result was lost: {_reason(exc)}"))

    def _settle(self, run: Run, result: object = None, error: BaseException | None = None) -> None:
        """End `run` once: whichever of its result, its worker's loss or the connection's comes first."""
        if not self.cluster.end(run):
            return
        if run.task is not None:
            run.task.release()
        if error is not None:
            run.future.set_exception(error)
        else:
            run.future.set_result(result)

    # --- the monitor thread: the scheduler and its workers ---

    def _monitor(self) -> None:
        while not self.closing:
            try:
                self.tick()
            except Exception as exc:  # a scheduler going away mid-call, or a bug: look again next time
                log.warning("executor.monitor_error", reason=f"{type(exc).__name__}: {_reason(exc)}")
            self.wake.wait(self.retry_in)
            self.wake.clear()

    def tick(self) -> None:
        """One look: reconnect if the scheduler was lost; then who joined, who left, what to probe."""
        client = self.client
        if client is None or client.status != "running":
            self._lost_scheduler()
            client = self._reconnect()
            if client is None:
                return
        if self.cluster.stale_now():
            self._stop_stale(client)
        info = client.scheduler_info(n_workers=-1)["workers"]
        # A worker process is known by its own scratch folder: one that took a dead one's address has another.
        now = {address: (w["local_directory"], w["nthreads"]) for address, w in info.items()}
        for address, wid in self.cluster.ids().items():
            if now.get(address, (None,))[0] != wid:
                self._worker_left(client, address)
        reprobe = self.probes.refresh()
        known = self.cluster.ids()
        for address, (wid, nthreads) in now.items():
            if address not in known:
                self.cluster.joined(address, wid, nthreads)
            refused = self.cluster.refused_since(address)
            if address not in known or reprobe or (refused is not None and time.monotonic() - refused > REPROBE):
                self.probes.send(client, address)
            worker = info[address]
            self.cluster.set_running(address, worker.get("status", "running") == "running", worker.get("last_seen"))

    def _stop_stale(self, client: Client) -> None:
        """Attempts the last connection left running (the daemon lost the scheduler, its workers did not): stop them."""
        checked = self.cluster.stale_now()
        found = client.run(dask_worker.active_runs, on_error="return")
        running = {r for runs in found.values() if isinstance(runs, list) for r in runs}
        if checked & running:
            client.run(dask_worker.cancel_runs, sorted(checked & running), wait=False)
        if all(isinstance(runs, list) for runs in found.values()):  # one that did not answer may still run one
            self.cluster.stopped(checked - running)

    def _worker_left(self, client: Client, address: str) -> None:
        """A worker left the cluster: runs that had started on it died with it (a crash); the others never ran."""
        worker, runs = self.cluster.left(address)
        log.warning("executor.worker_left", worker=address, runs=sorted(r.spec.run_id for r in runs))
        tasks = [t for t in [worker.probe, *(r.task for r in runs)] if t is not None]
        for run in runs:
            self._settle(run, error=_vanished(run, f"its worker ({address}) left the Dask cluster"))
        if tasks:  # pinned to a worker that is gone, they would wait for it for ever: the cluster forgets them
            client.cancel(tasks, force=True, reason="chute: its worker left")

    def _lost_scheduler(self) -> None:
        with self.lock:
            client, self.client = self.client, None
        self.cluster.lost()
        self.probes.forget()
        if client is None:
            return
        running = self._drop_runs("the connection to the Dask scheduler was lost")
        self.cluster.add_stale(running)
        log.warning("executor.disconnected", scheduler=self.config.address, runs=running)
        try:
            client.close(timeout=2)
        except Exception:  # it is broken already: nothing of it is used again
            pass

    def _drop_runs(self, reason: str) -> list[str]:
        runs = self.cluster.all_runs()
        for run in runs:
            self._settle(run, error=ExecutorUnavailable(reason))
        return sorted(r.spec.run_id for r in runs)

    def _reconnect(self) -> Client | None:
        try:
            client = dask_client.connect(self.config, self.loop.loop, self.plugin, self.topic)
            client.subscribe_topic(progress.topic(self.topic), self._progressed)
        except Exception as exc:  # not back yet
            if self.retry_in == MONITOR_INTERVAL:  # once per outage, not at every try
                log.info("executor.reconnect_failed", scheduler=self.config.address, reason=_reason(exc))
            self.retry_in = min(RECONNECT_MAX, self.retry_in * 2)
            return None
        with self.lock:
            self.client = client
        self.retry_in = MONITOR_INTERVAL
        return client


def _vanished(run: Run, reason: str) -> BaseException:
    """A run gone with its worker: a crash if it had started (its claim says so), else it never ran."""
    started = run.spec.claim is None or claims.marked(run.spec.claim, claims.RUNNING)
    return WorkerLost(reason) if started else ExecutorUnavailable(reason)


def _lost(exc: BaseException | None, address: str) -> BaseException:
    """A task's error as the service reads it: the worker's death is a WorkerLost, anything else itself."""
    if isinstance(exc, KilledWorker):
        return WorkerLost(f"its worker ({address}) died")
    return exc if exc is not None else ExecutorUnavailable("the task ended without a result")


def _sweep_sent(marker: str, sent) -> None:
    """The sweep could not be sent (the scheduler went meanwhile): each worker sweeps its own when it restarts."""
    exc = None if sent.cancelled() else sent.exception()
    if exc is not None:
        log.warning("executor.sweep_failed", marker=marker, reason=_reason(exc))


def _age(now: float, seen: float | None) -> float | None:
    """Seconds since `seen`, never below 0 (a scheduler's clock a little ahead of ours); None when not known."""
    return None if seen is None else round(max(0.0, now - seen), 1)
