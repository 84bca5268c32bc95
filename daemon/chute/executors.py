"""The executor the config names, built: the local pool, or a Dask cluster (imported only then)."""

from __future__ import annotations

from collections.abc import Callable

from .catalog import Catalog
from .config import Config
from .errors import ChuteError
from .executor import Executor, LocalExecutor
from .leases import Identity


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
