"""A pool worker: one process that executes one run at a time for the daemon.

Started by the local executor as `python -m chute.worker FD DAEMON_PID LOG_FORMAT LOG_LEVEL`,
with FD one end of a socket pair to the daemon. It dies with the daemon whatever
kills it (PR_SET_PDEATHSIG, and the socket's end of file), takes its launcher and
modules with it, and is the subreaper of its modules, so that no process a module
left behind outlives the run. It sends the daemon a heartbeat every BEAT_EVERY
seconds, by which the daemon knows it is not frozen (executor.LocalExecutor.supervise).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import replace
from multiprocessing.connection import Connection

from . import entry, logs, procs
from .launcher.warm import Modules
from .leases import hostname
from .progress import Reporter
from .run import RunSpec
from .runner import execute

# From a thread of its own, not the step engine's loop: staging a large input and publishing its
# results take minutes outside that loop, and a worker stopped by a module (SIGSTOP) stops this thread too.
BEAT_EVERY = 1.0
log = logs.get("chute.worker")


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


def _die_with(daemon_pid: int) -> None:
    """SIGKILL this process when the daemon dies; exit now if it already has (the race before prctl)."""
    try:
        procs.die_with_parent(signal.SIGKILL)
    except OSError as exc:  # the daemon's stop and the end of its socket still end this worker
        log.warning("worker.no_pdeathsig", reason=exc.strerror)
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
            beat.send(("done", payload.run_id, _execute(payload, cancel, modules, beat)))
            if cancel.eof:
                return
    finally:
        beat.stopped.set()
        modules.close()


def where() -> str:
    """This worker, named as LocalExecutor.where names it (in the process that calls it: its pid)."""
    return f"{hostname()}/worker-{os.getpid()}"


def _execute(spec: RunSpec, cancel: ConnCancel, modules: Modules, beat: Heartbeat):
    # Its live progress goes next to its heartbeats, as ("progress", run_id, message).
    reporter = Reporter(spec, lambda message: beat.send(("progress", spec.run_id, message)))
    try:
        return replace(execute(spec, cancel, reporter, modules.for_run(spec)), worker=where())
    except Exception as exc:  # a bug: the daemon logs it and keeps the claim
        log.exception("run.error", **spec.context(), reason=f"{type(exc).__name__}: {exc}")
        return exc
    finally:
        reporter.close()
        # Whatever a module left running, even out of its group and with no marker, is our child now.
        entry.kill_orphans(modules.pids())


def main(argv: list[str]) -> int:
    fd, daemon_pid, log_format, log_level = int(argv[0]), int(argv[1]), argv[2], argv[3]
    logs.configure(log_format, log_level)
    _die_with(daemon_pid)
    os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the daemon only; the daemon decides what stops
    try:
        entry.become_subreaper()
    except OSError as exc:  # then an escaped module process is found by its marker only
        log.warning("worker.no_subreaper", reason=exc.strerror)
    serve(Connection(fd))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
