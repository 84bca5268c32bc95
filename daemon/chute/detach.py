"""`chute run --detach`: the daemon in the background, for hosts without systemd.

Under systemd chute runs in the foreground and never forks (contract §8). Here
python-daemon (PEP 3143) does the classic steps: a double fork and a new
session, stdin from /dev/null, stdout and stderr appended to the log file, and
a pidfile created while the daemon runs and removed when it stops cleanly.

As daemon(7) asks of such a daemon, the command waits until the daemon is
watching its inboxes, so whatever stops it from starting (a live daemon on the
pidfile, a folder it cannot create) is the command's own one-line error and
exit code, not a line in a log nobody is reading yet.
"""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path

import daemon.pidfile
import lockfile

# python-daemon's package; chute's own code is found under daemon/chute/, and
# the repository's daemon/ folder is never a package (contract §1).
import daemon

from . import logs
from .catalog import Catalog
from .errors import RET_OK, AlreadyRunning, ChuteError, UsageError
from .service import Service
from .systemd import Notifier

START_TIMEOUT = 60.0  # seconds the command waits for the daemon to say it is watching


def detach(catalog: Catalog, pidfile: Path | None, log_file: Path | None) -> int:
    """Start the daemon in the background; returns once it is watching its inboxes (or failed to start).

    Returns:
        The exit code of this process: the command's in the caller, the
        daemon's own (after it stopped) in the detached process.
    """
    if os.environ.get("NOTIFY_SOCKET"):
        # A Type=notify unit would wait for a READY=1 that a forked-off daemon never sends.
        raise UsageError("--detach is for hosts without systemd; under systemd run `chute run` in the foreground")
    if pidfile is None or log_file is None:
        raise UsageError("--detach needs --pidfile P and --log-file F (once detached, there is no terminal to log to)")
    lock = daemon.pidfile.TimeoutPIDLockFile(str(pidfile.absolute()), acquire_timeout=0)
    _refuse_if_running(lock)
    try:
        log = open(log_file, "a", buffering=1, encoding="utf-8")
    except OSError as exc:
        raise ChuteError(f"cannot open the log file {log_file}: {exc.strerror}") from exc
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child:
        os.close(write_end)
        log.close()
        os.waitpid(child, 0)  # it exits as soon as python-daemon has forked the daemon from it
        return _wait_until_started(read_end, lock, log_file)
    os.close(read_end)
    return _run_detached(catalog, lock, log, _Startup(write_end))


def _refuse_if_running(lock: daemon.pidfile.TimeoutPIDLockFile) -> None:
    """AlreadyRunning when a live daemon holds the pidfile; a dead one's pidfile is removed."""
    pid = lock.read_pid()
    if pid is None:
        if os.path.exists(lock.path):
            raise AlreadyRunning(f"{lock.path} exists but holds no pid; remove it if no chute is running")
        return
    if _is_chute(pid):
        raise AlreadyRunning(f"already running as pid {pid} (pidfile {lock.path})")
    lock.break_lock()  # left by a daemon that was killed, or by a crashed host


def _is_chute(pid: int) -> bool:
    """Whether `pid` is a live chute process (not a recycled pid, not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's: not ours to judge
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: a live pid is all there is to go on
    return b"chute" in cmdline  # empty for a zombie


def _wait_until_started(fd: int, lock: daemon.pidfile.TimeoutPIDLockFile, log_file: Path) -> int:
    message = _read_message(fd)
    if message is None:
        raise ChuteError(f"the daemon did not report that it started within {START_TIMEOUT:.0f} s; see {log_file}")
    if message == "READY=1":
        print(f"chute: running as pid {lock.read_pid()}, logging to {log_file}")
        return RET_OK
    if message.startswith("ERROR="):
        code, _, text = message[len("ERROR=") :].partition(" ")
        error = ChuteError(text)
        error.exit_code = int(code)
        raise error
    raise ChuteError(f"the daemon stopped while starting; see {log_file}")


def _read_message(fd: int) -> str | None:
    """What the daemon wrote before it closed its end ("" if it died first); None after START_TIMEOUT."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return b"".join(chunks).decode(errors="replace").strip()
            chunks.append(chunk)
    finally:
        os.close(fd)


def _run_detached(catalog: Catalog, lock: daemon.pidfile.TimeoutPIDLockFile, log, startup: _Startup) -> int:
    """In the forked child: become the daemon, serve until stopped; returns the daemon's exit code."""
    context = daemon.DaemonContext(
        working_directory=os.getcwd(),  # relative paths of the command line stay what they were
        umask=_umask(),  # python-daemon's default of 0 would make every result world-writable
        detach_process=True,  # even when started by init or inetd: --detach was asked for
        pidfile=lock,
        stdout=log,
        stderr=log,
        files_preserve=[startup.fd],
        # Nothing of python-daemon's: its SIGTERM handler would exit at once. The
        # service installs its own SIGTERM/SIGINT/SIGHUP handlers in start().
        signal_map={},
    )
    try:
        context.open()
    except lockfile.AlreadyLocked:
        return startup.failed(AlreadyRunning(f"already running (pidfile {lock.path} was taken while starting)"))
    except (lockfile.Error, daemon.daemon.DaemonError, OSError) as exc:
        return startup.failed(ChuteError(f"cannot become a daemon: {exc}"))
    with context:
        logs.configure(catalog.config.log.format, catalog.config.log.level)
        try:
            service = Service(catalog, notifier=startup)
        except ChuteError as exc:
            return startup.failed(exc)
        try:
            service.serve()
        except Exception as exc:
            startup.failed(ChuteError(f"{type(exc).__name__}: {exc}"))
            raise
    return RET_OK


class _Startup(Notifier):
    """The service's notifier in a detached daemon: READY=1 (or an error) goes to the waiting command.

    The daemon(7) way of telling the original process that initialization is
    complete: one message on a pipe, then the pipe is closed. Everything else a
    notifier says is for systemd, which is not there.
    """

    def __init__(self, fd: int) -> None:
        super().__init__(environ={})
        self.fd: int | None = fd

    def ready(self) -> None:
        self._tell("READY=1")

    def failed(self, exc: ChuteError) -> int:
        self._tell(f"ERROR={exc.exit_code} {exc}")
        return exc.exit_code

    def _tell(self, message: str) -> None:
        if self.fd is None:
            return  # a reload's READY=1, or an error after the command returned: the log has it
        try:
            os.write(self.fd, message.encode())
        except OSError:
            pass  # the command was interrupted (Ctrl-C) and no one is waiting
        os.close(self.fd)
        self.fd = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
