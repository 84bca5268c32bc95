"""The surface every executor offers (executor.py describes it), and the one the config names, built: the local
pool, or a Dask cluster (imported only then)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol

from .catalog import Catalog
from .config import Config
from .errors import ChuteError
from .executor import LocalExecutor
from .leases import Identity
from .run import RunSpec


class Executor(Protocol):
    def submit(self, spec: RunSpec) -> Future: ...

    def cancel(self, run_id: str) -> None: ...

    def free(self, room: bool = True) -> int: ...

    def ahead(self) -> int: ...

    def where(self, run_id: str) -> str | None: ...

    def sweep(self, marker: str) -> None: ...

    def supervise(self, now: float) -> float | None: ...

    def healthy(self) -> bool: ...

    def progress(self) -> dict[str, dict]: ...  # each running run's last live progress (progress.Reporter)

    def workers(self) -> list[dict]: ...  # each worker, its state and run, and its heartbeat's age where known

    def kill(self) -> None: ...

    def close(self) -> None: ...


def configured(catalog: Catalog, me: Identity, current: Callable[[], Config]) -> Executor:
    """The configured executor; `current()` is the config in force (a reload changes the folders Dask must see)."""
    cfg = catalog.config
    if cfg.executor.kind == "dask":
        try:
            from .dask_executor import DaskExecutor
        except ImportError as exc:
            raise ChuteError(
                f"executor.kind 'dask' needs Dask ({exc.name} is missing): pip install 'chute[dask]'"
            ) from None
        return DaskExecutor(current)
    return LocalExecutor(cfg, me)
