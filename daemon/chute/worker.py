"""A pool worker: one process that executes one run at a time for the daemon.

Started by the local executor as `python -m chute.worker FD DAEMON_PID LOG_FORMAT LOG_LEVEL`,
with FD one end of a socket pair to the daemon. It dies with the daemon whatever
kills it (PR_SET_PDEATHSIG, and the socket's end of file), takes its launcher and
modules with it, and is the subreaper of its modules, so that no process a module
left behind outlives the run. It sends the daemon a heartbeat every BEAT_EVERY
seconds, by which the daemon knows it is not frozen (executor.LocalExecutor.supervise).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Connection

from . import entry, logs
from .leases import hostname
from .run import Launch, RunSpec
from .runner import execute

_PR_SET_PDEATHSIG = 1
RETRY_AFTER = 600.0  # seconds before a launcher that could not start is tried again
# From a thread of its own, not the step engine's loop: staging a large input and publishing its
# results take minutes outside that loop, and a worker stopped by a module (SIGSTOP) stops this thread too.
BEAT_EVERY = 1.0
log = logs.get("chute.worker")
WHERE = f"{hostname()}/worker-{os.getpid()}"  # as LocalExecutor.where names this worker


class ConnCancel:
    """The cancel signal of a run: a ("cancel", run_id) message from the daemon, or the daemon gone (end of file)."""

    def __init__(self, conn: Connection, run_id: str):
        self.conn, self.run_id = conn, run_id
        self.set = False
        self.eof = False

    def fileno(self) -> int:
        return self.conn.fileno()

    def is_set(self) -> bool:
        try:
            while not self.set and self.conn.poll():
                kind, run_id = self.conn.recv()
                self.set = kind == "cancel" and run_id == self.run_id
        except (EOFError, OSError):
            self.set = self.eof = True
        return self.set


class Modules:
    """This process's warm launcher, started when a run first asks for one and kept between runs.

    A launcher that cannot start is not asked again for RETRY_AFTER seconds: meanwhile
    every module is a fresh interpreter (one `launcher.unavailable` line, not one per module).
    """

    def __init__(self, via=None):
        self.launch: Launch | None = None
        self.launcher = None
        self.broken_until = 0.0
        self.started_pid: int | None = None
        # Where spawn runs: a launcher is tied to the thread that starts it (PR_SET_PDEATHSIG), so a
        # caller whose threads come and go (a Dask worker) hands a long-lived one (an executor of 1 thread).
        self.via = via

    def for_run(self, spec: RunSpec) -> Modules | None:
        return self._use(spec.launch, spec.python, dict(spec.environ))

    def _use(self, launch: Launch, python: str, environ: dict[str, str]) -> Modules | None:
        if launch.mode != "warm" or time.monotonic() < self.broken_until:
            return None
        if self.launcher is None or launch != self.launch:
            self.close()
            from .launcher import Launcher

            self.launcher = Launcher(python, launch.preload, environ)
            self.launch = launch
        return self

    def spawn(self, argv, cwd, env, stdout, stderr) -> int:
        if self.via is not None:
            return self.via.submit(self._spawn, argv, cwd, env, stdout, stderr).result()
        return self._spawn(argv, cwd, env, stdout, stderr)

    def _spawn(self, argv, cwd, env, stdout, stderr) -> int:
        from .launcher import LauncherUnavailable

        try:
            pid = self.launcher.spawn(argv, cwd, env, stdout, stderr)
        except LauncherUnavailable as exc:
            if not self.launcher.running:  # it cannot start: stop asking for a while
                self.broken_until = time.monotonic() + RETRY_AFTER
                log.warning("launcher.unavailable", reason=str(exc), retry_in_s=RETRY_AFTER)
            raise
        if self.launcher.pid != self.started_pid:
            self.started_pid = self.launcher.pid
            log.info("launcher.started", pid=self.started_pid, skipped=self.launcher.skipped or None)
        return pid

    def fileno(self) -> int:
        return self.launcher.fileno()

    def supervise(self, now: float) -> float | None:
        """Kill and replace a launcher that is stopped or does not answer (launcher.Launcher.supervise)."""
        pid = self.launcher.pid
        due = self.launcher.supervise(now)
        if pid is not None and self.launcher.pid is None:
            log.warning("launcher.frozen", pid=pid)  # its modules are reported lost next (launcher.died)
        return due

    def collect(self) -> list:
        exits = self.launcher.collect()
        lost = [e for e in exits if e.returncode is None]
        if lost:
            log.warning("launcher.died", reason=lost[0].reason, modules=len(lost))
        return exits

    @property
    def running(self) -> bool:
        return self.launcher is not None and self.launcher.running

    @property
    def pid(self) -> int | None:
        return None if self.launcher is None else self.launcher.pid

    def warm_up(self, launch: Launch, environ: dict[str, str]) -> None:
        """Start the launcher before the first run asks for it (a module's env adds PYTHONUNBUFFERED=1)."""
        from .launcher import LauncherUnavailable

        if self._use(launch, sys.executable, environ) is None:
            return
        try:
            self.launcher.prepare(environ | {"PYTHONUNBUFFERED": "1"})
        except LauncherUnavailable as exc:
            log.warning("launcher.unavailable", reason=str(exc), retry_in_s=None)
            return
        self.started_pid = self.launcher.pid
        log.info("launcher.started", pid=self.started_pid, skipped=self.launcher.skipped or None)

    def pids(self) -> set[int]:
        return {self.pid} if self.pid else set()

    def close(self) -> None:
        if self.launcher is not None:
            self.launcher.close()
            self.launcher = None


def _die_with(daemon_pid: int) -> None:
    """SIGKILL this process when the daemon dies; exit now if it already has (the race before prctl)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != daemon_pid:
        sys.exit(0)


class Heartbeat:
    """Sends ("beat", None, None) to the daemon every BEAT_EVERY seconds; `send` shares its lock."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        threading.Thread(target=self._beat, name="chute-heartbeat", daemon=True).start()

    def send(self, message: tuple) -> None:
        with self.lock:
            self.conn.send(message)

    def _beat(self) -> None:
        while not self.stopped.wait(BEAT_EVERY):
            try:
                self.send(("beat", None, None))
            except OSError:  # the daemon is gone: the main thread sees the end of file
                return


def serve(conn: Connection) -> None:
    """Run what the daemon sends until it closes the connection."""
    modules = Modules()
    beat = Heartbeat(conn)
    try:
        while True:
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                return
            if kind == "warm":
                modules.warm_up(*payload)
                continue
            if kind != "run":
                continue  # a cancel for a run that has already finished
            cancel = ConnCancel(conn, payload.run_id)
            beat.send(("done", payload.run_id, _execute(payload, cancel, modules)))
            if cancel.eof:
                return
    finally:
        beat.stopped.set()
        modules.close()


def _execute(spec: RunSpec, cancel: ConnCancel, modules: Modules):
    try:
        return replace(execute(spec, cancel, modules=modules.for_run(spec)), worker=WHERE)
    except Exception as exc:  # a bug: the daemon logs it and keeps the claim
        log.exception("run.error", **spec.context(), reason=f"{type(exc).__name__}: {exc}")
        return exc
    finally:
        # Whatever a module left running, even out of its group and with no marker, is our child now.
        entry.kill_orphans(modules.pids())


def main(argv: list[str]) -> int:
    fd, daemon_pid, log_format, log_level = int(argv[0]), int(argv[1]), argv[2], argv[3]
    _die_with(daemon_pid)
    os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the daemon only; the daemon decides what stops
    entry.become_subreaper()
    logs.configure(log_format, log_level)
    serve(Connection(fd))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
