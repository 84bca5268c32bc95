"""Where runs execute: the one place the service touches concurrency.

The local executor is a process pool (forkserver, created before any thread
starts). Each pool worker runs one run at a time and supervises its modules.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing
import signal
from concurrent.futures.process import BrokenProcessPool

from .pipeline import RunSpec
from .runner import RunResult, execute

_PR_SET_PDEATHSIG = 1

__all__ = ["BrokenProcessPool", "LocalExecutor"]


def _worker_init(log_format: str, log_level: str) -> None:
    from . import logs

    # Ctrl-C on a terminal reaches the whole process group; the daemon decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # A worker must not outlive its daemon: a killed daemon's worker would go on and
    # publish while the restarted daemon runs the same claim again.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    # "auto" decides by the worker's own stdout, which is the daemon's: the same terminal or journal stream.
    logs.configure(log_format, log_level)


def _noop() -> None:
    return None


def _run(spec: RunSpec) -> RunResult:
    return execute(spec)


class LocalExecutor:
    """A pool of `workers` processes that can be rebuilt when a worker dies."""

    def __init__(self, workers: int, log_format: str, log_level: str):
        self.workers = workers
        self.initargs = (log_format, log_level)
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["chute.runner"])
        self.pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        pool = cf.ProcessPoolExecutor(self.workers, mp_context=self.context, initializer=_worker_init, initargs=self.initargs)
        # Start every worker now, before the service starts any thread.
        for f in [pool.submit(_noop) for _ in range(self.workers)]:
            f.result()
        return pool

    def submit(self, spec: RunSpec) -> cf.Future:
        return self.pool.submit(_run, spec)

    def rebuild(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()

    @property
    def broken(self) -> bool:
        return bool(getattr(self.pool, "_broken", False))

    def shutdown(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)
