"""The Dask cluster as the daemon sees it: which workers it has, their probe verdicts, what runs on each.

One structure with one owner: the daemon's loop thread (placing runs), Dask's callback
thread (results, probes) and the executor's monitor thread (joins, departures) all read
and change it through these methods, each under its one lock.
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from distributed import Future as DaskFuture

from .run import RunSpec

PROBING, ALLOWED, REFUSED = "probing", "allowed", "refused"


@dataclass
class Worker:
    """A Dask worker: probing until it is known to see the shared folders."""

    id: str  # its local_directory: one per worker process
    nthreads: int
    state: str = PROBING  # probing | allowed | refused
    verdict: str | None = None  # what its last probe said (logged when it changes)
    runs: set[str] = field(default_factory=set)
    probe: DaskFuture | None = None  # its probe under way
    probed_at: float = 0.0  # monotonic
    running: bool = True  # the scheduler says it takes tasks (not paused, not retiring)
    last_seen: float | None = None  # the scheduler's time (time.time) of its last heartbeat
    turn: int = 0  # when it was last given a run: ties go to the one idle longest

    def takes_runs(self) -> bool:
        return self.state == ALLOWED and self.running and self.nthreads > len(self.runs)


@dataclass
class Run:
    """A run placed on a worker; `task` is its Dask future once submitted."""

    spec: RunSpec
    future: Future
    key: str
    worker: str  # its address
    worker_id: str
    task: DaskFuture | None = None


class Membership:
    """Workers and runs of the cluster, and the runs a lost connection left stopping; all under `lock`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.workers: dict[str, Worker] = {}
        self.runs: dict[str, Run] = {}
        # Runs in flight when the scheduler was lost: their attempts may still be stopping on a worker
        # that never lost it. None of them is sent again before no worker runs it any more.
        self.stale: set[str] = set()
        self.turns = itertools.count(1)

    # --- runs ---

    def free(self) -> int:
        with self.lock:
            return sum(
                max(0, w.nthreads - len(w.runs)) for w in self.workers.values() if w.state == ALLOWED and w.running
            )

    def place(self, spec: RunSpec, future: Future, key: str) -> Run | str:
        """Put a run on the allowed worker with the most free threads (of equals, the idlest); else say why not."""
        with self.lock:
            free = [(w.nthreads - len(w.runs), -w.turn, a) for a, w in self.workers.items() if w.takes_runs()]
            if not free:
                return "no Dask worker is free"
            if spec.run_id in self.stale:
                return "its earlier attempt is still stopping on a worker"
            address = max(free)[2]
            worker = self.workers[address]
            run = self.runs[spec.run_id] = Run(spec, future, key, address, worker.id)
            worker.runs.add(spec.run_id)
            worker.turn = next(self.turns)
            return run

    def submitted(self, run: Run, task: DaskFuture) -> bool:
        """Its task is on the cluster; False if the run ended meanwhile (its worker left): the task is not wanted."""
        with self.lock:
            run.task = task
            return self.runs.get(run.spec.run_id) is run

    def run(self, run_id: str) -> Run | None:
        with self.lock:
            return self.runs.get(run_id)

    def current(self, run: Run) -> bool:
        with self.lock:
            return self.runs.get(run.spec.run_id) is run

    def all_runs(self) -> list[Run]:
        with self.lock:
            return list(self.runs.values())

    def end(self, run: Run) -> bool:
        """Forget `run` once: True for the first of its result, its worker's loss or the connection's."""
        with self.lock:
            if self.runs.get(run.spec.run_id) is not run:
                return False
            del self.runs[run.spec.run_id]
            worker = self.workers.get(run.worker)
            if worker is not None:
                worker.runs.discard(run.spec.run_id)
            return True

    # --- workers ---

    def ids(self) -> dict[str, str]:
        """Each worker's address -> its id (its scratch folder)."""
        with self.lock:
            return {a: w.id for a, w in self.workers.items()}

    def joined(self, address: str, wid: str, nthreads: int) -> None:
        with self.lock:
            self.workers[address] = Worker(wid, nthreads)

    def left(self, address: str) -> tuple[Worker, list[Run]]:
        """A worker gone from the cluster, with the runs it had (still to be ended)."""
        with self.lock:
            worker = self.workers.pop(address)
            return worker, [self.runs[r] for r in worker.runs if r in self.runs]

    def set_running(self, address: str, running: bool, last_seen: float | None = None) -> None:
        with self.lock:
            self.workers[address].running = running
            self.workers[address].last_seen = last_seen

    def refused_since(self, address: str) -> float | None:
        """When a refused worker was probed last; None if it is not refused."""
        with self.lock:
            w = self.workers[address]
            return w.probed_at if w.state == REFUSED else None

    def probing(self, address: str, now: float) -> None:
        """No run goes to the worker before a new probe says it sees the shared folders."""
        with self.lock:
            w = self.workers[address]
            w.state, w.probe, w.probed_at = PROBING, None, now

    def probe_sent(self, address: str, task: DaskFuture) -> None:
        with self.lock:
            worker = self.workers.get(address)
            if worker is not None:
                worker.probe = task

    def probe_counts(self, address: str, task: DaskFuture) -> Worker | None:
        """The worker, if `task` is its probe under way (not one it left, nor one a later probe replaced)."""
        with self.lock:
            worker = self.workers.get(address)
            return worker if worker is not None and worker.probe is task else None

    def verdict(self, worker: Worker, state: str) -> bool:
        """Record a probe's verdict; whether it differs from the last one."""
        with self.lock:
            changed = state != worker.verdict
            worker.state = worker.verdict = state
            return changed

    def lost(self) -> None:
        """The scheduler is gone: its workers are unknown until a new connection lists them."""
        with self.lock:
            self.workers.clear()

    # --- runs a lost connection left stopping ---

    def add_stale(self, run_ids: list[str]) -> None:
        with self.lock:
            self.stale.update(run_ids)

    def stale_now(self) -> set[str]:
        with self.lock:
            return set(self.stale)

    def stopped(self, run_ids: set[str]) -> None:
        with self.lock:
            self.stale -= run_ids
