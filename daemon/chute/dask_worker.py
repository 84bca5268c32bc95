"""chute inside a Dask worker process: runs executed as a local pool worker executes them.

The daemon registers `ChutePlugin` with the cluster; Dask sets it up in every
worker process, present and future. It gives the process a workspace owner of
its own in `work_dir`, removes the workspaces of dead owners on that host and
kills the module processes they left behind (a worker killed under its runs),
keeps a warm launcher per concurrent run, and stops the process's runs when the
worker closes (the scheduler gone, `dask worker` stopped): their claims are
kept, and the daemon runs them again.

The worker process is not made a subreaper (entry.become_subreaper): it runs
Dask's own threads and maybe other tasks, and orphans it adopted but did not
start would stay zombies. A module's escaped processes are found by their
per-attempt marker instead (pipeline's entry.sweep of `CHUTE_ENTRY=`).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from distributed import WorkerPlugin, get_worker

from . import entry, logs, progress, staging
from .errors import WorkerLost
from .launcher.warm import Modules
from .leases import Identity, alive_here, hostname
from .progress import Reporter
from .run import OWNER, RunResult, RunSpec, owned
from .runner import execute
from .systemd import module_environ

PLUGIN = "chute"
_CLOSING = {"closing", "closing_gracefully", "closed", "failed"}
_state: WorkerState | None = None  # this worker process's, made by the first plugin setup
_forward_to: contextvars.ContextVar = contextvars.ContextVar("chute_forward_to", default=None)


class PipeCancel:
    """A run's cancel: a pipe that turns readable when the daemon, or the worker's close, stops the run."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_CLOEXEC)
        self.flag = False

    def fileno(self) -> int:
        return self.r

    def is_set(self) -> bool:
        return self.flag

    def set(self) -> None:
        if not self.flag:
            self.flag = True
            os.write(self.w, b"x")

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


class WorkerState:
    """What one worker process keeps between runs: its owner folder, idle launchers, the runs' cancels."""

    def __init__(self) -> None:
        self.me = Identity.mine()
        self.owner = f"dask.{self.me.daemon_id}"
        # On this worker's launchers and everything forked from them (whose /proc environ is the
        # launcher's), so a restarted worker finds what a dead one left (clean).
        self.environ = tuple(owned(module_environ(os.environ), self.owner).items())
        self.lock = threading.Lock()
        self.cancels: dict[str, tuple[str, PipeCancel]] = {}  # Dask key (one per submission) -> run id, cancel
        self.early: set[str] = set()  # cancels that came before their run started
        self.idle: list[Modules] = []
        self.owners: set[Path] = set()
        # Launchers are started from this one long-lived thread: PR_SET_PDEATHSIG follows the
        # thread that forked, and a Dask task thread may be retired while the launcher lives on.
        self.spawner = ThreadPoolExecutor(1, thread_name_prefix="chute-launcher")
        self.closing = False

    def execute(self, spec: RunSpec, key: str, address: str, topic: str) -> RunResult:
        """Run `spec` in this worker's own workspace folder, with its environment and interpreter."""
        spec = replace(spec, owner=self.owner, host=hostname(), python=sys.executable, environ=self.environ)
        self._own(spec.work_dir)
        cancel = self._begin(key, spec.run_id)
        modules = self._modules()
        worker = get_worker()
        token = _forward_to.set((worker, address, topic))
        reporter = Reporter(spec, partial(worker.log_event, progress.topic(topic)))
        try:
            result = execute(spec, cancel, reporter, modules.for_run(spec))
        except Exception as exc:  # a bug: logged here; the daemon keeps the claim and tries again later
            logs.get("chute.worker").exception("run.error", **spec.context(), reason=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            reporter.close()
            _forward_to.reset(token)
            self._end(key, cancel, modules)
        return replace(result, worker=address)

    def _own(self, work_dir: Path) -> None:
        if work_dir not in self.owners:
            staging.owner_dir(work_dir, self.me, self.owner)
            self.owners.add(work_dir)

    def _begin(self, key: str, run_id: str) -> PipeCancel:
        cancel = PipeCancel()
        with self.lock:
            self.cancels[key] = (run_id, cancel)
            if self.closing or key in self.early:
                self.early.discard(key)
                cancel.set()
        return cancel

    def _modules(self) -> Modules:
        with self.lock:
            return self.idle.pop() if self.idle else Modules(via=self.spawner)

    def _end(self, key: str, cancel: PipeCancel, modules: Modules) -> None:
        with self.lock:
            self.cancels.pop(key, None)
            self.idle.append(modules)
        cancel.close()

    def cancel(self, key: str) -> None:
        with self.lock:
            if key in self.cancels:
                self.cancels[key][1].set()
            else:
                self.early.add(key)

    def cancel_runs(self, run_ids: set[str]) -> None:
        with self.lock:
            for run_id, cancel in self.cancels.values():
                if run_id in run_ids:
                    cancel.set()

    def active(self) -> list[str]:
        with self.lock:
            return [run_id for run_id, _ in self.cancels.values()]

    def close(self) -> None:
        """The worker is closing: stop its runs now (their inputs stay claimed), then its launchers."""
        with self.lock:
            self.closing = True
            for _, cancel in self.cancels.values():
                cancel.set()
            idle, self.idle = self.idle, []
        for modules in idle:
            modules.close()


class ChutePlugin(WorkerPlugin):
    """Set up chute in a Dask worker process (idempotent: the daemon registers it on every connect)."""

    name = PLUGIN
    idempotent = True

    def __init__(self, work_dir: str, log_format: str, log_level: str):
        self.work_dir, self.log_format, self.log_level = work_dir, log_format, log_level

    async def setup(self, worker) -> None:
        await asyncio.to_thread(self._setup)

    def _setup(self) -> None:
        global _state
        if _state is not None:
            return
        logs.configure(self.log_format, self.log_level)
        _add_forwarder()
        _state = WorkerState()
        clean(Path(self.work_dir))

    def teardown(self, worker) -> None:
        # Also called when the plugin is registered again (another daemon, a reconnect): keep the runs then.
        if _state is not None and str(getattr(worker.status, "name", worker.status)) in _CLOSING:
            _state.close()


def run(spec: RunSpec, worker_id: str, key: str, topic: str) -> RunResult:
    """The Dask task of one run, on the worker the daemon chose; its events also go to `topic`."""
    worker = get_worker()
    if str(worker.local_directory) != worker_id:
        # Dask would run a task again on a new worker that took a dead one's address: that is a crash.
        raise WorkerLost(f"its worker at {worker.address} died")
    if _state is None:
        raise RuntimeError("chute's worker plugin is not set up in this Dask worker")
    return _state.execute(spec, key, worker.address, topic)


def probe(paths: list[str]) -> dict[str, Any]:
    """What a worker sees of the shared folders: the first one missing, and its host."""
    missing = next((p for p in paths if not os.path.isdir(p)), None)
    return {"missing": missing, "host": hostname()}


async def cancel_run(key: str, dask_worker=None) -> None:
    """Stop the run of Dask task `key` in this worker (by Client.run: a coroutine, so the daemon need not wait)."""
    if _state is not None:
        _state.cancel(key)


async def active_runs(dask_worker=None) -> list[str]:
    """The run ids this worker process is running now."""
    return [] if _state is None else _state.active()


async def cancel_runs(run_ids: list[str], dask_worker=None) -> None:
    """Stop these runs wherever they are in this worker (attempts the daemon lost track of)."""
    if _state is not None:
        _state.cancel_runs(set(run_ids))


async def kill_run(key: str, run_id: str, dask_worker=None) -> int:
    """Stop it, and SIGKILL its module processes at once (the daemon gave up waiting)."""
    await cancel_run(key)
    return await asyncio.to_thread(entry.sweep, f"CHUTE_RUN_ID={run_id}")


async def sweep(marker: str, dask_worker=None) -> None:
    """Kill this host's processes that carry `marker` (a run's leftovers; Client.run without waiting: a coroutine)."""
    killed = await asyncio.to_thread(entry.sweep, marker)
    if killed:
        logs.get("chute.worker").warning("worker.swept", marker=marker, killed=killed)


def clean(work_dir: Path) -> None:
    """Kill the module processes dead owners on this host left running, then remove their workspaces."""
    log = logs.get("chute.worker")
    for folder, record in _dead_owners(work_dir):
        killed = sweep_under(folder) + entry.sweep(f"{OWNER}={folder.name}")
        if killed:
            log.warning("worker.orphans_killed", owner=folder.name, pid=record.get("pid"), killed=killed)
    for folder in staging.remove_dead_owners(work_dir):
        log.info("work.removed", workspace=str(folder))


def _dead_owners(work_dir: Path) -> list[tuple[Path, dict]]:
    try:
        folders = list(work_dir.iterdir())
    except OSError:
        return []
    dead = []
    for folder in folders:
        try:
            record = json.loads((folder / staging.OWNER).read_text())
        except (OSError, ValueError):
            continue
        if not alive_here(record):
            dead.append((folder, record))
    return dead


def sweep_under(folder: Path) -> int:
    """SIGKILL every process whose TMPDIR lies in `folder` (a module of one of its workspaces); returns how many."""
    prefix = f"TMPDIR={folder}/".encode()
    return entry.kill_where(lambda env: any(part.startswith(prefix) for part in env.split(b"\0")))


def _add_forwarder() -> None:
    """Send every run event of this process to the daemon too (a Dask event), besides the worker's own log."""
    processors = list(structlog.get_config()["processors"])
    processors.insert(len(processors) - 1, _forward)
    structlog.configure(processors=processors)


def _forward(logger, name, event_dict):
    target = _forward_to.get()
    if target is not None and "run_id" in event_dict:
        worker, address, topic = target
        fields = {k: v for k, v in event_dict.items() if k not in ("exc_info", "stack_info")}
        try:
            worker.log_event(topic, {**json.loads(json.dumps(fields, default=str)), "worker": address})
        except Exception:  # the scheduler is gone: the worker's own log still has it
            pass
    return event_dict
