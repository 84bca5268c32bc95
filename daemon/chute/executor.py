"""Where runs execute: the one place the daemon touches concurrency.

The surface every executor offers (the local pool here; a Dask cluster in dask_executor.py): `submit(spec)`
returns a concurrent.futures.Future of the `RunResult`; `cancel(run_id)` asks a run to stop (its input is then
released); `free()` says how many runs could start now (none while the workers' disk is below its reserve,
unless `room=False`: a kept result's delivery needs none); `ahead()` how many more are worth claiming now, so
that a slot that frees starts its next run at once; `where(run_id)` names the worker; `sweep(marker)` kills
the processes a dead daemon or worker left (by the marker in their environment); `kill()` stops everything at
once; `close()` ends it. The local pool's workers each run in a cgroup of their own where the host allows it
(cgroups.py): a worker's death, a clean stop and the next start after a kill -9 then leave no process behind,
marker or not. A future that fails with `WorkerLost` means the run died with its worker (a crash, counted
toward the file's max_crashes); `ExecutorUnavailable` means it never reached a worker (defer it, charge
nothing).

`supervise(now)`, called by the daemon loop, kills a worker that is frozen (a module stopped it, issue 19):
its run then fails with `WorkerLost` too. It returns when it wants to look again.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path

from . import cgroups, entry, keep, logs, procs, staging
from .config import Config
from .errors import ChuteError, WorkerLost
from .leases import Identity, hostname
from .run import Launch, RunResult, RunSpec, owned
from .systemd import module_environ

log = logs.get("chute.executor")
# A worker whose connection is closed exits at once (it is idle by then); one that has not after this
# long is killed. The collector thread gets as long to notice the close.
REAP_TIMEOUT = 10.0
JOIN_TIMEOUT = 5.0
AHEAD = 2  # at most this many runs claimed and waiting for a worker (LocalExecutor.ahead)
# A worker beats every second (worker.BEAT_EVERY). One silent for STALE seconds and stopped (state T: a
# module sent it SIGSTOP, issue 19) is killed at once; one silent for SILENT seconds is killed anyway.
# Killed, it is replaced, and its run is charged as a crash (WorkerLost), as for the OOM killer.
STALE = 3.0
SILENT = 30.0
SILENT_START = 120.0  # for a worker not beating yet: its imports on a cold cache (launcher.START_TIMEOUT)
LOOK_EVERY = 1.0  # seconds between looks at a silent worker's state


class ExecutorUnavailable(ChuteError):
    """The run could not be handed to any worker (a scheduler gone): nothing ran, nothing is charged."""


@dataclass
class _Slot:
    """One worker process and the run it is on."""

    proc: subprocess.Popen
    conn: Connection
    run_id: str | None = None
    future: Future | None = None
    beats: int = 0  # heartbeats received (by the collector thread)
    heard: tuple[int, float] | None = None  # (beats, when) as supervise last saw them change
    frozen: str | None = None  # why supervise killed it
    dead: bool = False
    pidfd: int = field(default=-1)
    cgroup: Path | None = None  # its own cgroup (cgroups.Containment.adopt), killed when it dies
    progress: dict | None = None  # its run's last live progress message (progress.Reporter)


class LocalExecutor:
    """`workers` worker processes on this host, each replaced alone when it dies (huey's way)."""

    def __init__(self, config: Config, me: Identity):
        self.args = (config.log.format, config.log.level)
        self.work_dir, self.reserve = config.work_dir, config.work_reserve
        # The daemon's id on its workers too, so a successor can sweep whatever it left.
        self.environ = owned(os.environ, me.daemon_id)
        # Each worker starts its warm launcher at once (its preloads take a while), for the modules'
        # environment as the service gives it (service.Service.environ).
        self.warm = (
            Launch(config.launcher.mode, tuple(config.launcher.preload)),
            owned(module_environ(os.environ), me.daemon_id),
        )
        for folder in staging.remove_dead_owners(config.work_dir):
            log.info("work.removed", workspace=str(folder))
        for folder in keep.sweep(config.work_dir):
            log.info("work.removed", kept=str(folder))  # delivered, then a crash before it was removed
        self.owner_dir = staging.owner_dir(config.work_dir, me, me.daemon_id)
        # Before the first worker: a dead daemon's cgroups (and what escaped into them) go first.
        self.containment = cgroups.Containment.probe(me)
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC)
        # Started here, in the thread that runs the daemon loop: PR_SET_PDEATHSIG follows the
        # thread that forked, so a worker must never be started from a thread that may end.
        self.slots = [self._spawn() for _ in range(config.workers)]
        if self.containment.mode == cgroups.Mode.CGROUP and not all(s.cgroup for s in self.slots):
            self.containment.downgrade("a pool worker could not be moved into its cgroup")
        log.info(
            "daemon.containment",
            mode=self.containment.mode.value,
            reason=self.containment.reason,
            cgroup=str(self.containment.own) if self.containment.own else None,
        )
        self.closing = False
        self.looked: float | None = None  # when supervise last ran
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
        # Moved before it is sent anything: until then it has started no process that could stay outside.
        slot = _Slot(
            proc, Connection(mine.detach()), pidfd=procs.pidfd(proc.pid), cgroup=self.containment.adopt(proc.pid)
        )
        slot.conn.send(("warm", self.warm))
        return slot

    # --- the daemon's side (its loop thread) ---

    def free(self, room: bool = True) -> int:
        if room and not staging.has_room(self.work_dir, self.reserve):
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

    def progress(self) -> dict[str, dict]:
        with self.lock:
            return {s.run_id: s.progress for s in self.slots if s.run_id is not None and s.progress is not None}

    def workers(self) -> list[dict]:
        """Each pool worker: its name, state, run, and seconds since supervise last saw its heartbeats move."""
        now = time.monotonic()  # the service's clock, which supervise is given
        with self.lock:
            slots = list(self.slots)
        return [
            {
                "worker": f"{hostname()}/worker-{s.proc.pid}",
                "state": "frozen" if s.frozen else "dead" if s.dead else "running" if s.run_id else "idle",
                "run_id": s.run_id,
                "heartbeat_age_s": None if s.heard is None else round(max(0.0, now - s.heard[1]), 1),
            }
            for s in slots
        ]

    def supervise(self, now: float) -> float | None:
        """Kill every worker that is stopped or has stopped beating; returns when to look again."""
        # A gap in our own looks (this daemon was stopped, or starved) is not the workers' silence: their
        # beats may be waiting unread. The loop looks every STALE seconds at least (it wakes for our due).
        restart = self.looked is None or now - self.looked > 2 * STALE
        self.looked = now
        with self.lock:
            live = [s for s in self.slots if not s.dead and s.frozen is None]
        due = [self._look(slot, now, restart) for slot in live]
        return min(due, default=None)

    def _look(self, slot: _Slot, now: float, restart: bool) -> float:
        beats = slot.beats
        if restart or slot.heard is None or slot.heard[0] != beats:
            slot.heard = (beats, now)
        silent = now - slot.heard[1]
        if silent < STALE:
            return slot.heard[1] + STALE
        try:
            stopped = procs.stopped(slot.proc.pid)
        except OSError:  # it died meanwhile: the collector thread sees that on its pidfd
            stopped = False
        if stopped:
            self._freeze(slot, "was stopped (SIGSTOP?)")
        elif silent >= (SILENT if beats else SILENT_START):
            self._freeze(slot, f"sent no heartbeat for {silent:.0f} s")
        return now + LOOK_EVERY  # a silent worker is looked at again soon (or, killed, is gone by then)

    def _freeze(self, slot: _Slot, why: str) -> None:
        """SIGKILL a frozen worker's group (that ends a stopped process too); the collector sees it die."""
        slot.frozen = f"{why} and was killed"
        log.error("executor.worker_frozen", pid=slot.proc.pid, run_id=slot.run_id, reason=slot.frozen)
        slot.proc.kill()
        try:
            os.killpg(slot.proc.pid, signal.SIGKILL)  # its own group (worker.main), if it got that far
        except OSError:
            pass

    def kill(self) -> None:
        """SIGKILL every worker (their launchers and warm modules die with them); fail their runs."""
        with self.lock:
            for slot in self.slots:
                slot.proc.kill()
            slots = list(self.slots)
        for slot in slots:
            self._release(slot)  # with them whatever escaped their modules' process groups

    def close(self) -> None:
        """End every worker: idle ones exit at the end of their connection; then reap them."""
        self.closing = True
        os.write(self.wake_w, b"x")
        self.thread.join(timeout=JOIN_TIMEOUT)
        for slot in self.slots:
            slot.conn.close()
        for slot in self.slots:
            self._reap(slot)
            self._release(slot)
        self.containment.close()
        for fd in (self.wake_r, self.wake_w):
            os.close(fd)
        staging.remove_owner_dir(self.owner_dir)  # no worker of ours is left to write in it

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

    @staticmethod
    def _release(slot: _Slot) -> None:
        """Kill what is left in a worker's cgroup (escaped module processes) and remove it."""
        folder, slot.cgroup = slot.cgroup, None
        if folder is not None:
            killed = cgroups.kill(folder)
            if killed:
                log.info("cgroup.removed", cgroup=str(folder), processes=killed)

    # --- the collector thread: results and deaths, as they happen ---

    def _collect(self) -> None:
        while not self.closing:
            with self.lock:
                watched = {s.pidfd: s for s in self.slots if not s.dead and s.pidfd >= 0}
                busy = {s.conn: s for s in self.slots if not s.dead}  # idle ones beat too
            for ready in wait([self.wake_r, *watched, *busy]):
                if ready == self.wake_r:
                    os.read(self.wake_r, 4096)
                elif isinstance(ready, Connection):
                    self._receive(busy[ready])
                elif isinstance(ready, int):  # a pidfd: the worker exited
                    self._died(watched[ready])

    def _receive(self, slot: _Slot) -> None:
        try:
            kind, run_id, value = slot.conn.recv()
        except (EOFError, OSError):
            self._died(slot)
            return
        if kind in ("beat", "progress"):  # a progress message says it is alive as a beat does
            slot.beats += 1
            if kind == "progress" and run_id == slot.run_id:
                slot.progress = value
            return
        with self.lock:
            future, slot.run_id, slot.future, slot.progress = slot.future, None, None, None
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
            slot.run_id, slot.progress = None, None
        code = slot.proc.wait()
        self._release(slot)  # what its modules left, even without a marker, before the next attempt starts
        if run_id is not None:
            self._discard(run_id)
        if future is not None and not self.closing:
            why = f"died: killed by signal {-code}" if code < 0 else f"died: exited with status {code}"
            future.set_exception(WorkerLost(f"its worker (pid {slot.proc.pid}) {slot.frozen or why}"))
        log.error("executor.worker_died", pid=slot.proc.pid, run_id=run_id, exit_code=code)

    def _discard(self, run_id: str) -> None:
        """What a run that died with its worker left on this host: its modules, then its workspace (before
        its future fails, so that the attempt run next, in a workspace of its own, is never touched)."""
        entry.sweep(f"CHUTE_RUN_ID={run_id}")
        for ws in self.owner_dir.glob(f"{run_id}.*"):
            shutil.rmtree(ws, ignore_errors=True)


__all__ = ["ExecutorUnavailable", "LocalExecutor", "RunResult", "WorkerLost"]
