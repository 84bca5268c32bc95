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

import itertools
import logging
import os
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial

from distributed import Client, KilledWorker
from distributed.security import Security
from distributed.utils import LoopRunner

from . import claims, entry, logs
from .config import Config, Executor as ExecutorConfig
from .errors import ChuteError
from .executor import ExecutorUnavailable, WorkerLost
from .leases import STATE_DIR
from .run import RunSpec
from . import dask_worker

log = logs.get("chute.executor")
MONITOR_INTERVAL = 1.0  # seconds between looks at the cluster's workers (and tries to reconnect)
RECONNECT_MAX = 10.0  # seconds between tries to reach a scheduler that is gone, at most
REPROBE = 30.0  # seconds between probes of a refused worker (its share may be mounted since)


@dataclass
class _Worker:
    """A Dask worker as the daemon sees it: probing until it is known to see the shared folders."""

    id: str  # its local_directory: one per worker process
    nthreads: int
    state: str = "probing"  # probing | allowed | refused
    verdict: str | None = None  # what its last probe said (logged when it changes)
    runs: set[str] = field(default_factory=set)
    probe: object = None  # the Dask future of its probe under way
    probed_at: float = 0.0  # monotonic
    running: bool = True  # the scheduler says it takes tasks (not paused, not retiring)
    turn: int = 0  # when it was last given a run: ties go to the one idle longest


@dataclass
class _Run:
    spec: RunSpec
    future: Future
    key: str
    worker: str
    task: object = None  # the Dask future


class DaskExecutor:
    """Runs on the Dask cluster `current().executor` names; every worker must see its inboxes and modules."""

    def __init__(self, current: Callable[[], Config]):
        cfg = current()
        self.config, self.current = cfg.executor, current
        self.plugin = dask_worker.ChutePlugin(str(cfg.work_dir), cfg.log.format, cfg.log.level)
        self.lock = threading.Lock()
        self.workers: dict[str, _Worker] = {}
        self.runs: dict[str, _Run] = {}
        self.paths: tuple[str, ...] | None = None  # what workers were last probed for
        # Runs in flight when the scheduler was lost: their attempts may still be stopping on a worker
        # that never lost it. None of them is sent again before no worker runs it any more.
        self.stale: set[str] = set()
        self.turns = itertools.count(1)
        self.topic = f"chute.events.{secrets.token_hex(4)}"  # this daemon's runs' events, relayed to its log
        self.wake, self.closing = threading.Event(), False
        self.retry_in = MONITOR_INTERVAL
        _quiet_dask()
        # One event loop thread for every client this executor makes: Dask's own, started per
        # client, stays behind each time a connection attempt fails (and a lost scheduler means many).
        self.loop = LoopRunner(asynchronous=False)
        self.loop.start()
        try:
            self.client: Client | None = self._first_connect()
        except BaseException:
            self.loop.stop()
            raise
        self.thread = threading.Thread(target=self._monitor, name="chute-dask", daemon=True)
        self.thread.start()

    def _first_connect(self) -> Client:
        if self.config.security is not None:  # a TLS file that is not there is no network problem: say which
            s = self.config.security
            for key, path in (("ca_file", s.ca_file), ("cert", s.cert), ("key", s.key)):
                if path is not None and not os.access(path, os.R_OK):
                    raise ChuteError(f"cannot read executor.security.{key} {path}")
        try:
            return self._connect()
        except ssl.SSLError as exc:
            raise ChuteError(
                f"cannot connect to the Dask scheduler at {self.config.address}: TLS: {_reason(exc)}"
            ) from None
        except (OSError, TimeoutError):
            raise ChuteError(
                f"cannot reach the Dask scheduler at {self.config.address} (executor.address) "
                f"within {self.config.connect_timeout:g} s"
            ) from None
        except Exception as exc:  # a malformed address, TLS files that do not load
            raise ChuteError(f"cannot connect to the Dask scheduler at {self.config.address}: {_reason(exc)}") from None

    # --- the daemon's side (its loop thread) ---

    def ahead(self) -> int:
        return 0  # a run's claim costs little next to its trip through the scheduler

    def free(self) -> int:
        with self.lock:
            if self.client is None or self.client.status != "running":
                return 0  # the scheduler is gone (or being reached again): claim nothing meanwhile
            return sum(
                max(0, w.nthreads - len(w.runs)) for w in self.workers.values() if w.state == "allowed" and w.running
            )

    def submit(self, spec: RunSpec) -> Future:
        future: Future = Future()
        with self.lock:
            address = self._pick()
            client = self.client
            if address is None or client is None or client.status != "running":
                future.set_exception(ExecutorUnavailable("no Dask worker is free"))
                return future
            if spec.run_id in self.stale:
                future.set_exception(ExecutorUnavailable("its earlier attempt is still stopping on a worker"))
                return future
            worker = self.workers[address]
            run = _Run(spec, future, f"chute-run-{spec.run_id}-{secrets.token_hex(3)}", address)
            self.runs[spec.run_id] = run
            worker.runs.add(spec.run_id)
            worker.turn = next(self.turns)
        try:
            run.task = client.submit(
                dask_worker.run,
                spec,
                worker.id,
                run.key,
                self.topic,
                key=run.key,
                workers=[address],
                allow_other_workers=False,
                pure=False,
                retries=0,
            )
        except Exception as exc:  # the connection went in between
            self._settle(run, error=ExecutorUnavailable(f"cannot reach the Dask scheduler: {_reason(exc)}"))
            return future
        run.task.add_done_callback(partial(self._done, run))
        return future

    def _pick(self) -> str | None:
        """The allowed worker with the most free threads; of equals, the one given a run longest ago."""
        free = [
            (w.nthreads - len(w.runs), -w.turn, address)
            for address, w in self.workers.items()
            if w.state == "allowed" and w.running and w.nthreads > len(w.runs)
        ]
        return max(free)[2] if free else None

    def cancel(self, run_id: str) -> None:
        self._tell(run_id, dask_worker.cancel_run)

    def where(self, run_id: str) -> str | None:
        with self.lock:
            run = self.runs.get(run_id)
        return None if run is None else run.worker

    def sweep(self, marker: str) -> None:
        """Kill what a dead daemon's runs left (by their marker): here, and on every worker (not waited for)."""
        entry.sweep(marker)
        with self.lock:
            client = self.client
        if client is None or client.status != "running":
            return  # a worker that lost its scheduler stops its runs itself; one that restarts sweeps (the plugin)
        try:
            client.run(entry.sweep, marker, wait=False)
        except Exception as exc:
            log.warning("executor.sweep_failed", marker=marker, reason=_reason(exc))

    def healthy(self) -> bool:
        return self.thread.is_alive()

    def kill(self) -> None:
        """Stop every run at once: its modules killed on its worker, its task forgotten by the cluster."""
        with self.lock:
            runs = list(self.runs.values())
        for run in runs:
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

    def _tell(self, run_id: str, function, *args) -> None:
        """Call `function(key, *args)` in the worker process of the run (Client.run, not a task: it never waits)."""
        with self.lock:
            run, client = self.runs.get(run_id), self.client
        if run is None or client is None:
            return
        try:
            client.run(function, run.key, *args, workers=[run.worker], wait=False)
        except Exception as exc:  # the scheduler is gone: its workers stop their runs themselves
            log.warning("executor.cancel_failed", run_id=run_id, worker=run.worker, reason=_reason(exc))

    # --- results, from Dask's callback thread ---

    def _done(self, run: _Run, task) -> None:
        if self.runs.get(run.spec.run_id) is not run:
            return  # settled already: its worker left, or the connection was lost
        try:
            if task.status == "finished":
                self._settle(run, result=task.result())
            elif task.status == "error":
                self._settle(run, error=_lost(task.exception(), run.worker))
            elif getattr(getattr(task._state, "exception", None), "reason", None) == "scheduler-connection-lost":
                with self.lock:
                    self.stale.add(run.spec.run_id)
                self._settle(run, error=ExecutorUnavailable("the connection to the Dask scheduler was lost"))
            else:  # the cluster dropped it (forgotten, cancelled by someone else)
                self._settle(run, error=_vanished(run, f"its task was dropped by the Dask cluster on {run.worker}"))
        except Exception as exc:  # the result could not be fetched: the claim says what became of the run
            self._settle(run, error=ExecutorUnavailable(f"its result was lost: {_reason(exc)}"))

    def _settle(self, run: _Run, result=None, error: BaseException | None = None) -> None:
        """End `run` once: whichever of its result, its worker's loss or the connection's comes first."""
        with self.lock:
            if self.runs.get(run.spec.run_id) is not run:
                return
            del self.runs[run.spec.run_id]
            worker = self.workers.get(run.worker)
            if worker is not None:
                worker.runs.discard(run.spec.run_id)
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
        if self.stale:
            self._stop_stale(client)
        info = client.scheduler_info(n_workers=-1)["workers"]
        # A worker process is known by its own scratch folder: one that took a dead one's address has another.
        now = {address: (w["local_directory"], w["nthreads"]) for address, w in info.items()}
        for address in [a for a, w in self.workers.items() if now.get(a, (None,))[0] != w.id]:
            self._worker_left(client, address)
        paths = self._shared_paths()
        reprobe = paths != self.paths
        self.paths = paths
        for address, (wid, nthreads) in now.items():
            if address not in self.workers:
                with self.lock:
                    self.workers[address] = _Worker(wid, nthreads)
                self._probe(client, address)
            elif reprobe or (
                self.workers[address].state == "refused"
                and time.monotonic() - self.workers[address].probed_at > REPROBE
            ):
                self._probe(client, address)
            self.workers[address].running = info[address].get("status", "running") == "running"

    def _stop_stale(self, client: Client) -> None:
        """Attempts the last connection left running (the daemon lost the scheduler, its workers did not): stop them."""
        with self.lock:
            checked = set(self.stale)
        found = client.run(dask_worker.active_runs, on_error="return")
        running = {r for runs in found.values() if isinstance(runs, list) for r in runs}
        if checked & running:
            client.run(dask_worker.cancel_runs, sorted(checked & running), wait=False)
        if all(isinstance(runs, list) for runs in found.values()):  # one that did not answer may still run one
            with self.lock:
                self.stale -= checked - running

    # --- probes: does a worker see the shared folders? ---

    def _shared_paths(self) -> tuple[str, ...]:
        """What a worker must see as this daemon does: the inboxes' `.chute` folders (the share), the modules."""
        cfg = self.current()
        shares = [str(f) for f in (inbox.path / STATE_DIR for inbox in cfg.inboxes) if f.is_dir()]
        if not shares:
            return ()  # none yet (a first start, before the leases make them): nothing to prove, no run to give
        return (*shares, *(str(f) for f in cfg.modules_path if f.is_dir()))

    def _probe(self, client: Client, address: str) -> None:
        """A small task pinned to the worker: does it see every inbox's `.chute` folder? No run goes there before."""
        with self.lock:
            worker = self.workers[address]
            worker.state, worker.probe, worker.probed_at = "probing", None, time.monotonic()
        if not self.paths:
            return  # no inbox is there yet, here either: the worker waits for one
        task = client.submit(
            dask_worker.probe,
            list(self.paths),
            key=f"chute-probe-{secrets.token_hex(4)}",
            workers=[address],
            allow_other_workers=False,
            pure=False,
            priority=100,
        )
        worker.probe = task
        task.add_done_callback(partial(self._probed, address))

    def _probed(self, address: str, task) -> None:
        worker = self.workers.get(address)
        if worker is None or worker.probe is not task or task.status == "cancelled":
            return  # it left, or a later probe (for other folders) counts
        seen: dict = {}
        try:
            seen = task.result()
            missing, reason = seen["missing"], None if seen["missing"] is None else "not found there"
        except Exception as exc:  # chute is not installed there, or the worker died meanwhile
            missing, reason = None, f"the probe failed: {_reason(exc)}"
        finally:
            task.release()
        state = "allowed" if reason is None else "refused"
        if state != worker.verdict:
            if state == "allowed":
                log.info("executor.worker_joined", worker=address, host=seen.get("host"), nthreads=worker.nthreads)
            else:
                log.error(
                    "executor.worker_refused",
                    worker=address,
                    path=missing,
                    reason=reason,
                    hint="every worker must see the shared folders at the same paths as the daemon",
                )
        with self.lock:
            worker.state = worker.verdict = state

    def _worker_left(self, client: Client, address: str) -> None:
        """A worker left the cluster: runs that had started on it died with it (a crash); the others never ran."""
        with self.lock:
            worker = self.workers.pop(address)
            runs = [self.runs[r] for r in worker.runs if r in self.runs]
        log.warning("executor.worker_left", worker=address, runs=sorted(r.spec.run_id for r in runs))
        tasks = [t for t in [worker.probe, *(r.task for r in runs)] if t is not None]
        for run in runs:
            self._settle(run, error=_vanished(run, f"its worker ({address}) left the Dask cluster"))
        if tasks:  # pinned to a worker that is gone, they would wait for it for ever: the cluster forgets them
            client.cancel(tasks, force=True, reason="chute: its worker left")

    def _lost_scheduler(self) -> None:
        with self.lock:
            client, self.client = self.client, None
            self.workers.clear()
            self.paths = None
        if client is None:
            return
        running = self._drop_runs("the connection to the Dask scheduler was lost")
        with self.lock:
            self.stale.update(running)
        log.warning("executor.disconnected", scheduler=self.config.address, runs=running)
        try:
            client.close(timeout=2)
        except Exception:  # it is broken already: nothing of it is used again
            pass

    def _drop_runs(self, reason: str) -> list[str]:
        with self.lock:
            runs = list(self.runs.values())
        for run in runs:
            self._settle(run, error=ExecutorUnavailable(reason))
        return sorted(r.spec.run_id for r in runs)

    def _reconnect(self) -> Client | None:
        try:
            client = self._connect()
        except Exception as exc:  # not back yet
            if self.retry_in == MONITOR_INTERVAL:  # once per outage, not at every try
                log.info("executor.reconnect_failed", scheduler=self.config.address, reason=_reason(exc))
            self.retry_in = min(RECONNECT_MAX, self.retry_in * 2)
            return None
        with self.lock:
            self.client = client
        self.retry_in = MONITOR_INTERVAL
        return client

    def _connect(self) -> Client:
        """A client of the scheduler, with chute's worker plugin registered and the run events relayed."""
        client = _Client(
            self.config.address,
            security=_security(self.config),
            timeout=self.config.connect_timeout,
            set_as_default=False,
            name="chute",
            loop=self.loop.loop,
        )
        try:
            try:
                client.register_plugin(self.plugin, name=dask_worker.PLUGIN)
            except Exception as exc:  # registered, but a worker could not set it up: the probe refuses that one
                log.warning("executor.plugin_failed", scheduler=self.config.address, reason=_reason(exc))
            client.subscribe_topic(self.topic, _relay)
        except BaseException:
            client.close(timeout=2)
            raise
        log.info(
            "executor.connected",
            scheduler=self.config.address,
            workers=len(client.scheduler_info(n_workers=-1)["workers"]),
        )
        return client


class _Client(Client):
    """Dask's client; one whose connection failed is not closed again when collected (a traceback on stderr)."""

    def __del__(self):
        if self.status == "running":
            super().__del__()


def _vanished(run: _Run, reason: str) -> BaseException:
    """A run gone with its worker: a crash if it had started (its claim says so), else it never ran."""
    started = run.spec.claim is None or claims.marked(run.spec.claim, claims.RUNNING)
    return WorkerLost(reason) if started else ExecutorUnavailable(reason)


def _lost(exc: BaseException | None, address: str) -> BaseException:
    """A task's error as the service reads it: the worker's death is a WorkerLost, anything else itself."""
    if isinstance(exc, KilledWorker):
        return WorkerLost(f"its worker ({address}) died")
    return exc if exc is not None else ExecutorUnavailable("the task ended without a result")


def _relay(event) -> None:
    """A run event logged on a worker, logged again here (with `worker`): one log shows every run."""
    _, fields = event
    fields = dict(fields)
    fields.pop("timestamp", None)
    level, name = fields.pop("level", "info"), fields.pop("event", "run.event")
    getattr(log, level if level in ("debug", "info", "warning", "error") else "info")(name, **fields)


def _security(config: ExecutorConfig) -> Security | None:
    if config.security is None:
        return None
    s = config.security
    return Security(
        tls_ca_file=str(s.ca_file),
        tls_client_cert=str(s.cert),
        tls_client_key=None if s.key is None else str(s.key),
        require_encryption=True,
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _quiet_dask() -> None:
    """Dask's own lines go through chute's renderer, and only critical ones: the executor.* events say the rest."""
    # distributed's own config gives some of its loggers a level (distributed.client: warning): each is set.
    names = {"distributed", "distributed.client", "distributed.core", "distributed.comm"}
    names |= {n for n in logging.root.manager.loggerDict if n.startswith("distributed.")}
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.CRITICAL)
