"""Where runs execute: the one place the daemon touches concurrency.

The surface every executor offers (the local pool here; a Dask cluster in
dask_executor.py): `submit(spec)` returns a concurrent.futures.Future of the
`RunResult`; `cancel(run_id)` asks a run to stop (its input is then released);
`free()` says how many runs could start now (none while the workers' disk is
below its reserve); `ahead()` how many more are worth claiming now, so that a
slot that frees starts its next run at once; `where(run_id)` names the worker;
`sweep(marker)` kills the processes a dead daemon or worker left (by the marker
in their environment); `kill()` stops everything at once; `close()` ends it. A
future that fails with `WorkerLost` means the run died with its worker (a crash,
counted toward the file's max_crashes); `ExecutorUnavailable` means it never
reached a worker (defer it, charge nothing).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Protocol

from . import entry, logs, staging
from .config import Config
from .errors import ChuteError
from .leases import Identity, hostname
from .run import Launch, RunResult, RunSpec
from .systemd import module_environ

log = logs.get("chute.executor")
# A worker whose connection is closed exits at once (it is idle by then); one that has not after this
# long is killed. The collector thread gets as long to notice the close.
REAP_TIMEOUT = 10.0
JOIN_TIMEOUT = 5.0
AHEAD = 2  # at most this many runs claimed and waiting for a worker (LocalExecutor.ahead)


class WorkerLost(ChuteError):
    """The worker running a run died under it (killed, out of memory, a bug that took the process down)."""


class ExecutorUnavailable(ChuteError):
    """The run could not be handed to any worker (a scheduler gone): nothing ran, nothing is charged."""


class Executor(Protocol):
    def submit(self, spec: RunSpec) -> Future: ...

    def cancel(self, run_id: str) -> None: ...

    def free(self) -> int: ...

    def ahead(self) -> int: ...

    def where(self, run_id: str) -> str | None: ...

    def sweep(self, marker: str) -> None: ...

    def healthy(self) -> bool: ...

    def kill(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class _Slot:
    """One worker process and the run it is on."""

    proc: subprocess.Popen
    conn: Connection
    run_id: str | None = None
    future: Future | None = None
    dead: bool = False
    pidfd: int = field(default=-1)


class LocalExecutor:
    """`workers` worker processes on this host, each replaced alone when it dies (huey's way)."""

    def __init__(self, config: Config, me: Identity):
        self.args = (config.log.format, config.log.level)
        self.work_dir, self.reserve = config.work_dir, config.work_reserve
        # CHUTE_OWNER: the daemon's id on its workers too, so a successor can sweep whatever it left.
        self.environ = os.environ | {"CHUTE_OWNER": me.daemon_id}
        # Each worker starts its warm launcher at once (its preloads take a while), for the modules'
        # environment as the service gives it (service.Service.environ).
        self.warm = (
            Launch(config.launcher.mode, tuple(config.launcher.preload)),
            module_environ(os.environ) | {"CHUTE_OWNER": me.daemon_id},
        )
        for folder in staging.remove_dead_owners(config.work_dir):
            log.info("work.removed", workspace=str(folder))
        self.owner_dir = staging.owner_dir(config.work_dir, me, me.daemon_id)
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC)
        # Started here, in the thread that runs the daemon loop: PR_SET_PDEATHSIG follows the
        # thread that forked, so a worker must never be started from a thread that may end.
        self.slots = [self._spawn() for _ in range(config.workers)]
        self.closing = False
        self.thread = threading.Thread(target=self._collect, name="chute-executor", daemon=True)
        self.thread.start()

    def _spawn(self) -> _Slot:
        mine, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "chute.worker", str(theirs.fileno()), str(os.getpid()), *self.args],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                close_fds=True,
                env=self.environ,
            )
        finally:
            theirs.close()
        slot = _Slot(proc, Connection(mine.detach()), pidfd=os.pidfd_open(proc.pid))
        slot.conn.send(("warm", self.warm))
        return slot

    # --- the daemon's side (its loop thread) ---

    def free(self) -> int:
        if not staging.has_room(self.work_dir, self.reserve):
            return 0  # a run now would only be deferred: leave the files in their inbox meanwhile
        with self.lock:
            return sum(1 for s in self.slots if s.run_id is None)

    def ahead(self) -> int:
        """Runs worth claiming beyond the free slots: a slot that frees starts one of them at once.

        Without them, a worker that finishes waits for the loop to claim its next file (a rename
        and two fsyncs in the inbox, ~5 ms under load, in every run of a backlog).
        """
        if not staging.has_room(self.work_dir, self.reserve):
            return 0
        return min(AHEAD, len(self.slots))

    def submit(self, spec: RunSpec) -> Future:
        future: Future = Future()
        with self.lock:
            i = next(i for i, s in enumerate(self.slots) if s.run_id is None)
            if self.slots[i].dead:
                self._reap(self.slots[i])
                self.slots[i] = self._spawn()
            slot = self.slots[i]
            slot.run_id, slot.future = spec.run_id, future
        try:
            slot.conn.send(("run", spec))
        except OSError as exc:  # it died since: the collector settles the future
            log.debug("executor.send_failed", run_id=spec.run_id, reason=str(exc))
        os.write(self.wake_w, b"x")
        return future

    def cancel(self, run_id: str) -> None:
        with self.lock:
            slot = next((s for s in self.slots if s.run_id == run_id and not s.dead), None)
        if slot is not None:
            try:
                slot.conn.send(("cancel", run_id))
            except OSError:
                pass

    def where(self, run_id: str) -> str | None:
        with self.lock:
            slot = next((s for s in self.slots if s.run_id == run_id), None)
        return None if slot is None else f"{hostname()}/worker-{slot.proc.pid}"

    def sweep(self, marker: str) -> None:
        entry.sweep(marker)

    def healthy(self) -> bool:
        return self.thread.is_alive()

    def kill(self) -> None:
        """SIGKILL every worker (their launchers and warm modules die with them); fail their runs."""
        with self.lock:
            for slot in self.slots:
                slot.proc.kill()

    def close(self) -> None:
        """End every worker: idle ones exit at the end of their connection; then reap them."""
        self.closing = True
        os.write(self.wake_w, b"x")
        self.thread.join(timeout=JOIN_TIMEOUT)
        for slot in self.slots:
            slot.conn.close()
        for slot in self.slots:
            self._reap(slot)
        for fd in (self.wake_r, self.wake_w):
            os.close(fd)

    @staticmethod
    def _reap(slot: _Slot) -> None:
        try:
            slot.proc.wait(timeout=REAP_TIMEOUT)
        except subprocess.TimeoutExpired:
            slot.proc.kill()
            slot.proc.wait()
        if slot.pidfd >= 0:
            os.close(slot.pidfd)
            slot.pidfd = -1

    # --- the collector thread: results and deaths, as they happen ---

    def _collect(self) -> None:
        while not self.closing:
            with self.lock:
                watched = {s.pidfd: s for s in self.slots if not s.dead and s.pidfd >= 0}
                busy = {s.conn: s for s in self.slots if s.run_id is not None and not s.dead}
            for ready in wait([self.wake_r, *watched, *busy]):
                if ready == self.wake_r:
                    os.read(self.wake_r, 4096)
                elif isinstance(ready, Connection):
                    self._receive(busy[ready])
                else:
                    self._died(watched[ready])

    def _receive(self, slot: _Slot) -> None:
        try:
            kind, run_id, value = slot.conn.recv()
        except (EOFError, OSError):
            self._died(slot)
            return
        with self.lock:
            future, slot.run_id, slot.future = slot.future, None, None
        if future is None or run_id is None:
            return
        if isinstance(value, BaseException):
            future.set_exception(value)
        else:
            future.set_result(value)

    def _died(self, slot: _Slot) -> None:
        with self.lock:
            if slot.dead:
                return
            slot.dead = True
            future, run_id, slot.future = slot.future, slot.run_id, None
            slot.run_id = None
        code = slot.proc.wait()
        if run_id is not None:
            self._discard(run_id)
        if future is not None and not self.closing:
            why = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            future.set_exception(WorkerLost(f"its worker (pid {slot.proc.pid}) died: {why}"))
        log.error("executor.worker_died", pid=slot.proc.pid, run_id=run_id, exit_code=code)

    def _discard(self, run_id: str) -> None:
        """What a run that died with its worker left on this host: its modules, then its workspace (before
        its future fails, so that the attempt run next, in a workspace of its own, is never touched)."""
        entry.sweep(f"CHUTE_RUN_ID={run_id}")
        for ws in self.owner_dir.glob(f"{run_id}.*"):
            shutil.rmtree(ws, ignore_errors=True)


__all__ = ["Executor", "ExecutorUnavailable", "LocalExecutor", "RunResult", "WorkerLost"]
