"""Probes of Dask workers: does each see the shared folders at the paths this daemon does? No run goes there before."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from functools import partial

from distributed import Client
from distributed import Future as DaskFuture

from . import dask_worker, logs
from .config import Config
from .dask_client import reason as _reason
from .leases import STATE_DIR
from .membership import ALLOWED, REFUSED, Membership

log = logs.get("chute.executor")


class Probes:
    """The folders workers were last probed for, and the probes sent (the monitor thread's; results on Dask's)."""

    def __init__(self, cluster: Membership, current: Callable[[], Config]):
        self.cluster, self.current = cluster, current
        self.paths: tuple[str, ...] | None = None  # what workers were last probed for

    def refresh(self) -> bool:
        """Look at the shared folders again; True when they changed, so every worker is probed again."""
        paths = self._shared_paths()
        changed = paths != self.paths
        self.paths = paths
        return changed

    def forget(self) -> None:
        """The scheduler was lost: the next connection's workers are all probed afresh."""
        self.paths = None

    def _shared_paths(self) -> tuple[str, ...]:
        """What a worker must see as this daemon does: the inboxes' `.chute` folders (the share), the modules."""
        cfg = self.current()
        shares = [str(f) for f in (inbox.path / STATE_DIR for inbox in cfg.inboxes) if f.is_dir()]
        if not shares:
            return ()  # none yet (a first start, before the leases make them): nothing to prove, no run to give
        return (*shares, *(str(f) for f in cfg.modules_path if f.is_dir()))

    def send(self, client: Client, address: str) -> None:
        """A small task pinned to the worker: does it see every inbox's `.chute` folder? No run goes there before."""
        self.cluster.probing(address, time.monotonic())
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
        self.cluster.probe_sent(address, task)
        task.add_done_callback(partial(self._probed, address))

    def _probed(self, address: str, task: DaskFuture) -> None:
        worker = self.cluster.probe_counts(address, task)
        if worker is None or task.status == "cancelled":
            return  # it left, or a later probe (for other folders) counts
        seen: dict = {}
        try:
            seen = task.result()
            missing, reason = seen["missing"], None if seen["missing"] is None else "not found there"
        except Exception as exc:  # chute is not installed there, or the worker died meanwhile
            missing, reason = None, f"the probe failed: {_reason(exc)}"
        finally:
            task.release()
        state = ALLOWED if reason is None else REFUSED
        if not self.cluster.verdict(worker, state):
            return
        if state == ALLOWED:
            log.info("executor.worker_joined", worker=address, host=seen.get("host"), nthreads=worker.nthreads)
        else:
            log.error(
                "executor.worker_refused",
                worker=address,
                path=missing,
                reason=reason,
                hint="every worker must see the shared folders at the same paths as the daemon",
            )
