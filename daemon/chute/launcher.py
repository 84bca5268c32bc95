"""The warm module launcher: modules forked from a process that has already imported PyAV, numpy and Pillow.

A fresh ``python main.py`` pays for the interpreter (~20 ms) and for ``import av`` (~180 ms) on every
module run. The launcher is one ``python -m chute.launcher`` per `Launcher`, started on the first
`Launcher.spawn`, that imports ``chute.modkit`` and the preload list once, then forks a child per module
run. The child is made into what ``subprocess.Popen([python, entrypoint, *args], cwd=folder, env=env,
stdin=DEVNULL, start_new_session=True, close_fds=True)`` would have given (SPEC §2): its own session and
process group, the module's argv, cwd, environment, sys.path[0], fresh sys.stdin/stdout/stderr on fds 0-2
and nothing else open, the signal dispositions and mask a fresh interpreter starts with, reseeded random
generators; the entrypoint then runs as ``__main__`` at the top level of the launcher's main, so the
interpreter's own exit (exit status, traceback, joining threads, atexit) is the module's, except that
the preloaded libraries are not torn down (`_exit_module` says why and what is kept).

What cannot be re-done in a forked child is what an interpreter reads once at start-up (`is_startup_variable`:
PYTHON*, the locale, the dynamic loader, thread counts): the launcher is started with the first module's
values, and a module whose environment differs there gets `LauncherUnavailable` (run it fresh). The
preloaded libraries were imported with the launcher's environment, and every module shares the launcher's
str hash seed (unless PYTHONHASHSEED fixes it for both).

The client side (`Launcher`) is for one single-threaded loop: `spawn`, then `fileno` in a selector and
`collect` when it is readable. The launcher dies with the thread that started it (PR_SET_PDEATHSIG) and
when its socket closes; either way it takes its modules with it.

This file holds the three parts in the order they run: the client (`Launcher`), the launcher process
(`main`, `_Server`), and the forked child becoming the module (`_become`, `_run_as_main`, `_exit_module`).
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import gc
import importlib
import importlib.machinery
import io
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import time
import types
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ChuteError

DEFAULT_PRELOAD = ("chute.modkit", "av", "numpy", "PIL.Image")

START_TIMEOUT = 120.0  # seconds for the launcher to import its preloads (a cold page cache, a busy host)
REPLY_TIMEOUT = 30.0  # seconds for it to answer one spawn (a fork takes milliseconds)
CLOSE_TIMEOUT = 10.0  # seconds for it to kill its modules and exit once its socket is closed
MESSAGE_LIMIT = 1 << 18  # bytes of one request (argv, cwd, environment); larger ones run fresh

# Read once when an interpreter (or a library the launcher preloads) starts; a forked child cannot
# change them, so a launcher only serves modules that agree with it on these.
_STARTUP_PREFIXES = ("PYTHON", "LD_", "OMP_", "OPENBLAS_", "MKL_", "GOTO_")
_STARTUP_NAMES = frozenset({"LANG", "LC_ALL", "LC_CTYPE"})

_PR_SET_PDEATHSIG = 1  # prctl(2)
_libc = ctypes.CDLL(None, use_errno=True)


class LauncherUnavailable(ChuteError):
    """The launcher cannot run this module (it cannot start, died, or cannot honour the request): run it fresh."""


@dataclass(frozen=True)
class Exit:
    """A module process ended (or was lost with its launcher)."""

    pid: int
    returncode: int | None  # as subprocess gives it: -N when killed by signal N; None when unknown
    reason: str | None = None  # why returncode is None


def is_startup_variable(name: str) -> bool:
    """Whether `name` is read by the interpreter (or a preloaded library) only when it starts."""
    return name in _STARTUP_NAMES or name.startswith(_STARTUP_PREFIXES)


def startup_variables(env: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if is_startup_variable(name)}


class Launcher:
    """The daemon's handle on one launcher process; not thread-safe (one selectors loop drives it).

    PR_SET_PDEATHSIG ties the launcher to the *thread* that started it: spawn first from a thread that
    lives as long as the Launcher (the loop's own), or the launcher dies with that thread.
    """

    def __init__(
        self,
        python: str = sys.executable,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        environ: Mapping[str, str] | None = None,
    ):
        self.python = python
        self.preload = tuple(preload)
        self.environ = dict(os.environ if environ is None else environ)
        self.skipped: dict[str, str] = {}  # preloads the running launcher could not import, and why
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._startup: dict[str, str] = {}  # the start-up variables the running launcher has
        self._modules: set[int] = set()  # started, exit not reported yet
        self._exits: list[Exit] = []
        self._poller: select.epoll | None = None  # fileno(): readable when the socket or the bell is
        self._bell = -1  # an eventfd rung while _exits holds exits read off the socket early

    @property
    def running(self) -> bool:
        """The launcher process is up."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def fileno(self) -> int:
        """Readable when exits wait in `collect` or the launcher died; the same fd across restarts."""
        return self._poller.fileno() if self._poller is not None else -1

    def spawn(self, argv: Sequence[str], cwd: str, env: Mapping[str, str], stdout: int, stderr: int) -> int:
        """Start a module as ``Popen(argv, cwd=cwd, env=env, ...)`` would; returns its pid (== its pgid).

        argv is ``[python, entrypoint, *args]``. Starts the launcher (again, if it died) first. Raises
        LauncherUnavailable, or OSError (as Popen) when cwd cannot be entered.
        """
        self._check(argv, cwd)
        startup = startup_variables(env)
        self._ensure_started(startup)
        if startup != self._startup:
            changed = sorted(set(startup.items()) ^ set(self._startup.items()))
            raise LauncherUnavailable(
                f"the module's environment differs from the launcher's in variables "
                f"read at start-up ({', '.join(sorted({name for name, _ in changed}))})"
            )
        request = json.dumps({"argv": list(argv), "cwd": os.fspath(cwd), "env": dict(env)}).encode()
        if len(request) > MESSAGE_LIMIT:
            raise LauncherUnavailable("the module's command line and environment are too large for the launcher")
        reply = self._request(request, [stdout, stderr])
        if "pid" in reply:
            self._modules.add(reply["pid"])
            return reply["pid"]
        if reply.get("errno"):
            raise OSError(reply["errno"], os.strerror(reply["errno"]), os.fspath(cwd))
        raise LauncherUnavailable(f"the module launcher cannot start the module: {reply.get('error')}")

    def prepare(self, env: Mapping[str, str]) -> None:
        """Start the launcher now (its preloads take a while), for modules that get `env`.

        Raises LauncherUnavailable; spawn() would then try again.
        """
        self._ensure_started(startup_variables(env))

    def collect(self) -> list[Exit]:
        """The exits reported since the last call (non-blocking); a dead launcher's modules come back as lost."""
        self._drain()
        if self._proc is not None and self._proc.poll() is not None:
            self._died()
        exits, self._exits = self._exits, []
        if self._bell >= 0:
            try:
                os.eventfd_read(self._bell)
            except BlockingIOError:
                pass
        return exits

    def close(self) -> None:
        """End the launcher (it kills every module group it started) and reap it. Idempotent."""
        if self._proc is not None:
            self._close_socket()  # its EOF: the launcher kills its modules' groups, reaps them, exits
            _wait_or_kill(self._proc, CLOSE_TIMEOUT)
            for pid in self._modules:
                _kill_group(pid)  # in case it was killed before it could
            self._proc = None
            self._modules.clear()
        if self._poller is not None:
            self._poller.close()
            os.close(self._bell)
            self._poller, self._bell = None, -1

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _check(self, argv: Sequence[str], cwd: str) -> None:
        if len(argv) < 2 or argv[0] != self.python or argv[1].startswith("-"):
            raise LauncherUnavailable(f"the module launcher runs `{self.python} SCRIPT ARGS...`, not {list(argv[:2])}")
        if not os.path.isfile(os.path.join(cwd, argv[1])):
            raise LauncherUnavailable(f"the entrypoint {argv[1]} is not a file in {cwd}")

    def _ensure_started(self, startup: dict[str, str]) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._drain()  # what it reported before it died, then its EOF
            if self._proc is not None:
                self._died()
        if self._proc is None:
            self._start(startup)

    def _start(self, startup: dict[str, str]) -> None:
        environ = {name: value for name, value in self.environ.items() if not is_startup_variable(name)}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [self.python, "-m", "chute.launcher", str(theirs.fileno()), str(os.getpid()), *self.preload]
        try:
            with theirs:
                # A session of its own: a terminal's Ctrl-C is for the daemon, which stops modules itself.
                # Its stderr is the daemon's: only a crash of the launcher itself would write there.
                self._proc = subprocess.Popen(
                    argv,
                    cwd="/",
                    env=environ | startup,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    pass_fds=[theirs.fileno()],
                    start_new_session=True,
                )
        except OSError as error:
            ours.close()
            raise LauncherUnavailable(f"cannot start the module launcher: {error}") from None
        self._sock, self._startup = ours, startup
        self._ensure_poller()
        self._poller.register(ours.fileno(), select.EPOLLIN)
        try:
            ready = self._reply(START_TIMEOUT)
        except LauncherUnavailable as error:
            raise LauncherUnavailable(f"cannot start the module launcher: {error}") from None
        if "ready" not in ready:
            self._kill()
            raise LauncherUnavailable(f"cannot start the module launcher: {ready.get('error')}")
        self.skipped = ready["skipped"]

    def _ensure_poller(self) -> None:
        if self._poller is None:
            self._poller = select.epoll()
            self._bell = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._poller.register(self._bell, select.EPOLLIN)

    def _request(self, request: bytes, fds: list[int]) -> dict[str, Any]:
        try:
            socket.send_fds(self._sock, [request], fds)
        except (BrokenPipeError, ConnectionResetError):  # it died (a bad fd raises, as for Popen)
            raise LauncherUnavailable(self._died()) from None
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:
                raise
            # Larger than the socket's buffer (SO_SNDBUF, under MESSAGE_LIMIT): it runs fresh.
            raise LauncherUnavailable(
                "the module's command line and environment are too large for the launcher"
            ) from None
        return self._reply(REPLY_TIMEOUT)

    def _reply(self, timeout: float) -> dict[str, Any]:
        """The launcher's answer to what was just asked; exits arriving meanwhile are kept for `collect`."""
        deadline = time.monotonic() + timeout
        poll = select.poll()
        poll.register(self._sock, select.POLLIN)
        while True:
            if not poll.poll(max(0.0, deadline - time.monotonic()) * 1000):
                self._kill()
                raise LauncherUnavailable(f"the module launcher did not answer within {timeout:g} s")
            message = self._receive()
            if message is None:
                reason = self._died()
                raise LauncherUnavailable(reason)
            if "exit" not in message:
                return message
            self._exited(message)

    def _receive(self, flags: int = 0) -> dict[str, Any] | None:
        """One message from the launcher; None at its EOF (it died). BlockingIOError with MSG_DONTWAIT."""
        try:
            data = self._sock.recv(MESSAGE_LIMIT, flags)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        return json.loads(data) if data else None

    def _drain(self) -> None:
        while self._sock is not None:
            try:
                message = self._receive(socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if message is None:
                self._died()
            elif "exit" in message:
                self._exited(message)

    def _exited(self, message: dict[str, Any]) -> None:
        self._modules.discard(message["exit"])
        self._exits.append(Exit(message["exit"], message["returncode"]))
        os.eventfd_write(self._bell, 1)

    def _died(self) -> str:
        """The launcher is gone: reap it; its unreported modules are lost (and their groups killed)."""
        proc, self._proc = self._proc, None
        self._close_socket()
        returncode = _wait_or_kill(proc, CLOSE_TIMEOUT)
        reason = f"the module launcher died ({_describe(returncode)})"
        for pid in sorted(self._modules):
            _kill_group(pid)  # PR_SET_PDEATHSIG killed the module; this gets what it started in its group
            self._exits.append(Exit(pid, None, reason))
        if self._modules:
            os.eventfd_write(self._bell, 1)
        self._modules.clear()
        return reason

    def _kill(self) -> None:
        self._proc.kill()
        self._died()

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._poller.unregister(self._sock.fileno())
            self._sock.close()
            self._sock = None


def _wait_or_kill(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _describe(returncode: int) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


# ---- The launcher process: python -m chute.launcher SOCKET_FD PARENT_PID PRELOAD... ----

# How the module running in this process ends, once its code has: set by _run_as_main, acted on by
# _exit_module (registered first at the launcher's start, so it is the last atexit handler to run).
_fast_exit = False
_exit_status: int | None = None  # None: in the launcher, or a status only the interpreter knows
_interrupted = False  # an uncaught KeyboardInterrupt: die by SIGINT, as a fresh interpreter does
_launcher_modules: frozenset[str] = frozenset()  # sys.modules when the launcher was ready
_SYS_DELETES = (
    "path",
    "argv",
    "ps1",
    "ps2",
    "last_type",
    "last_value",
    "last_traceback",
    "path_hooks",
    "path_importer_cache",
    "meta_path",
    "__interactivehook__",
)


@dataclass(frozen=True)
class _Startup:
    """What this interpreter started with, that every module it forks must start with too."""

    environ: dict[str, str]  # start-up variables as the interpreter left them (PEP 538 may set LC_CTYPE)
    path: list[str]  # sys.path without the entry for the script (or here, the cwd of -m)
    handlers: dict[int, Any]  # signal number -> SIG_DFL, SIG_IGN or default_int_handler
    mask: set[int]  # blocked signals, inherited as a fresh exec would inherit them
    encoding: str  # of sys.stdin/stdout/stderr (PYTHONIOENCODING, the locale, UTF-8 mode)
    errors: str  # of sys.stdin/stdout (stderr's is always backslashreplace)
    buffered: bool  # stdio buffered, unless PYTHONUNBUFFERED / -u (sys.flags does not say)

    @classmethod
    def take(cls) -> _Startup:
        handlers = {
            signum: signal.getsignal(signum)
            for signum in signal.valid_signals()
            if signum not in (signal.SIGKILL, signal.SIGSTOP)
        }
        return cls(
            environ=startup_variables(os.environ),
            path=sys.path[0 if sys.flags.safe_path else 1 :],
            handlers={signum: handler for signum, handler in handlers.items() if handler is not None},
            mask=signal.pthread_sigmask(signal.SIG_BLOCK, []),
            encoding=sys.__stdout__.encoding,
            errors=sys.__stdout__.errors,
            buffered=not sys.__stdout__.write_through,
        )


@dataclass(frozen=True)
class _ModuleRun:
    """What a forked child runs: argv as the module would have been exec'd with, and its environment."""

    argv: list[str]
    env: dict[str, str]
    startup: _Startup


class _Server:
    """The launcher's loop: fork a module per request, report each exit, end with the client."""

    def __init__(self, sock: socket.socket, startup: _Startup):
        self.sock, self.startup = sock, startup
        self.pid = os.getpid()
        self.max_fd = os.sysconf("SC_OPEN_MAX")
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ)
        self.children: dict[int, int] = {}  # pid -> pidfd, until its exit is reported
        self.serving = True

    def serve(self) -> _ModuleRun | None:
        """Serve until the client goes (None), or return in a forked child with the module it must run."""
        while self.serving:
            for key, _ in self.selector.select():
                run = self._receive() if key.fileobj is self.sock else self._reap(key.data)
                if run is not None:
                    return run
        self._stop()
        return None

    def _receive(self) -> _ModuleRun | None:
        try:
            data, fds, flags, _ = socket.recv_fds(self.sock, MESSAGE_LIMIT, 2)
        except ConnectionResetError:
            data, fds, flags = b"", [], 0
        if not data:
            self.serving = False  # the client closed its end, or died
        elif flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != 2:
            self._send({"error": "a truncated request"})
        else:
            return self._spawn(json.loads(data), fds)
        for fd in fds:
            os.close(fd)
        return None

    def _spawn(self, request: dict[str, Any], fds: list[int]) -> _ModuleRun | None:
        error = _threads_error() or _enter(request["cwd"])
        if error is None:
            try:
                return self._fork(request, fds)
            except OSError as exc:  # EAGAIN, ENOMEM
                error = {"error": f"cannot fork: {exc.strerror}"}
        os.chdir("/")
        for fd in fds:
            os.close(fd)
        self._send(error)
        return None

    def _fork(self, request: dict[str, Any], fds: list[int]) -> _ModuleRun | None:
        _flush_stdio()  # or the child would write the launcher's buffered output again
        started, ready = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(started)
            os.close(ready)
            raise
        if pid == 0:
            try:
                self._detach(fds)  # closes `ready` too: the launcher's read below returns
            except BaseException:  # noqa: BLE001 - nothing of the launcher may run on in a child
                os._exit(127)
            return _ModuleRun(request["argv"], request["env"], self.startup)
        os.chdir("/")
        for fd in (ready, *fds):
            os.close(fd)
        os.read(started, 1)  # EOF once the child has its own session and only fds 0-2 open
        os.close(started)
        pidfd = os.pidfd_open(pid)
        self.children[pid] = pidfd
        self.selector.register(pidfd, selectors.EVENT_READ, pid)
        self._send({"pid": pid})
        return None

    def _detach(self, fds: list[int]) -> None:
        """In the child: die with the launcher, a session of its own, fds 0-2 only."""
        _set_pdeathsig(signal.SIGKILL)
        if os.getppid() != self.pid:  # the launcher died before the line above
            os._exit(1)
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        for target, fd in enumerate((null, *fds)):
            os.dup2(fd, target)
        self.selector.close()
        self.sock.close()
        os.closerange(3, self.max_fd)  # the received fds, the pidfds, both ends of the start pipe

    def _reap(self, pid: int) -> None:
        pidfd = self.children.pop(pid)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)  # its pidfd is readable: it has exited, this does not block
        self._send({"exit": pid, "returncode": os.waitstatus_to_exitcode(status)})

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self.sock.send(json.dumps(message).encode())
        except (BrokenPipeError, ConnectionResetError):
            self.serving = False

    def _stop(self) -> None:
        for pid in self.children:
            _kill_group(pid)
        for pid in self.children:
            os.waitpid(pid, 0)


def _set_pdeathsig(signum: int) -> None:
    if _libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _threads_error() -> dict[str, str] | None:
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:  # a fork copies only the calling thread, and whatever locks the others held
        return {"error": f"the launcher has {threads} threads; it forks only with one"}
    return None


def _enter(cwd: str) -> dict[str, Any] | None:
    try:
        os.chdir(cwd)  # here, before the fork, so a bad cwd fails the spawn as it fails Popen
    except OSError as error:
        return {"error": f"cannot enter {cwd}: {error.strerror}", "errno": error.errno}
    return None


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    _libc.fflush(None)


def _preload(names: Sequence[str]) -> dict[str, str]:
    """Import every name that imports; the others, with why, one line each."""
    skipped = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - any failure only means that module stays cold
            skipped[name] = " ".join(f"{type(error).__name__}: {error}".split())
    return skipped


def _stop_blas_threads() -> None:
    """Stop OpenBLAS's thread pool, which it starts as soon as numpy loads it.

    OpenBLAS itself calls blas_thread_shutdown_ before every fork (pthread_atfork), and starts its pool
    again on the next parallel call in whichever process makes it: a module's numpy still gets its
    threads, sized from the same environment. Calling it once here keeps the launcher single-threaded
    between forks rather than only during them. (OPENBLAS_NUM_THREADS=1 would also do, but would leave
    every module's numpy single-threaded.)
    """
    with open("/proc/self/maps") as maps:
        paths = {line.split(maxsplit=5)[5].strip() for line in maps if "openblas" in line}
    for path in paths:
        shutdown = getattr(ctypes.CDLL(path), "blas_thread_shutdown_", None)
        if shutdown is not None:
            shutdown()


def main(argv: Sequence[str]) -> _ModuleRun | int:
    """Run the launcher; returns its exit status, or, in a forked child, the module to run."""
    fd, parent, preload = int(argv[0]), int(argv[1]), argv[2:]
    _set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:  # the client died before prctl
        return 1
    startup = _Startup.take()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an inherited SIG_IGN would reap its children for it
    _register_exit()
    if not sys.flags.safe_path:
        del sys.path[0]  # the cwd of `-m`: the preloads must come from where a module's imports come from
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    ready = _warm_up(preload)
    sock.send(json.dumps(ready).encode())
    if "error" in ready:
        return 1
    return _Server(sock, startup).serve() or 0


def _warm_up(preload: Sequence[str]) -> dict[str, Any]:
    """Import the preloads; the message for the client: ready (with the preloads skipped), or an error."""
    global _launcher_modules
    skipped = _preload(preload)
    _stop_blas_threads()
    error = _threads_error()
    if error is not None:
        return {"error": f"{error['error']} after importing {', '.join(preload)}"}
    gc.collect()
    gc.freeze()  # what is imported now stays shared with every child, not copied by their collector
    _launcher_modules = frozenset(sys.modules)
    return {"ready": os.getpid(), "skipped": skipped}


def _register_exit() -> None:
    global _fast_exit
    if atexit._ncallbacks() == 0:  # it must run last, so it must be registered first
        atexit.register(_exit_module)
        _fast_exit = True


def _become(run: _ModuleRun) -> str:
    """In the child: the process state of a fresh ``python entrypoint``; returns the script's path."""
    startup = run.startup
    os.environ.clear()  # os.environ's updates putenv, so C code and subprocesses see the module's
    os.environ.update({name: value for name, value in run.env.items() if not is_startup_variable(name)})
    os.environ.update(startup.environ)
    for signum, handler in startup.handlers.items():
        if signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, startup.mask)
    _open_stdio(startup)
    script = run.argv[1]
    path = os.path.join(os.getcwd(), script)  # as CPython makes __file__: joined, not normalized
    sys.argv, sys.orig_argv = list(run.argv[1:]), list(run.argv)
    sys.path[:] = ([] if sys.flags.safe_path else [os.path.dirname(os.path.realpath(path))]) + startup.path
    _reset_libraries()
    return path


def _open_stdio(startup: _Startup) -> None:
    """sys.stdin/stdout/stderr on fds 0-2, made as CPython's create_stdio makes them (Python/pylifecycle.c)."""
    sys.stdin = sys.__stdin__ = _stdio_stream(0, "<stdin>", startup.encoding, startup.errors, startup.buffered)
    sys.stdout = sys.__stdout__ = _stdio_stream(1, "<stdout>", startup.encoding, startup.errors, startup.buffered)
    sys.stderr = sys.__stderr__ = _stdio_stream(2, "<stderr>", startup.encoding, "backslashreplace", startup.buffered)


def _stdio_stream(fd: int, name: str, encoding: str, errors: str, buffered: bool) -> io.TextIOWrapper:
    writing = fd != 0
    buffer = io.open(fd, "wb" if writing else "rb", -1 if buffered or not writing else 0, closefd=False)
    raw = buffer.raw if isinstance(buffer, io.BufferedIOBase) else buffer
    raw.name = name
    line_buffering = buffered and (raw.isatty() or fd == 2)
    stream = io.TextIOWrapper(buffer, encoding, errors, "\n", line_buffering, not buffered)
    stream.mode = "w" if writing else "r"
    return stream


def _reset_libraries() -> None:
    """State the launcher's imports hold that a fresh interpreter would make anew from the module's environment."""
    if "tempfile" in sys.modules:
        sys.modules["tempfile"].tempdir = None  # re-read from the module's TMPDIR
    time.tzset()
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()  # `random` reseeds itself at fork; numpy's global RandomState does not
    if "faulthandler" in sys.modules and sys.modules["faulthandler"].is_enabled():
        sys.modules["faulthandler"].enable()  # onto the new sys.stderr


def _main_namespace(path: str) -> dict[str, Any]:
    """A new ``__main__`` module for the script at `path`, as ``python path`` makes it (Python/pythonrun.c)."""
    main_module = types.ModuleType("__main__")
    main_module.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    main_module.__annotations__ = {}
    main_module.__builtins__ = sys.modules["builtins"]
    main_module.__file__ = path
    main_module.__cached__ = None
    sys.modules["__main__"] = main_module
    return main_module.__dict__


def _run_script(path: str, program: str, namespace: dict[str, Any]) -> None:
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as error:
        print(f"{program}: can't open file {path!r}: [Errno {error.errno}] {error.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
    exec(compile(source, path, "exec", dont_inherit=True), namespace)


def _run_as_main(run: _ModuleRun) -> None:
    """Become the module and run it; the interpreter's exit is then the module's, as for a fresh one.

    The steps after the script are _PyRun_SimpleFileObject's: flush stdio; then either exit at once
    (SystemExit), or report an uncaught exception, and remove __file__ and __cached__ from __main__.
    """
    global _exit_status, _interrupted
    path = _become(run)
    namespace = _main_namespace(path)
    try:
        _run_script(path, run.argv[0], namespace)
    except SystemExit as exit:
        _flush_io()
        _exit_status = _status_of(exit.code)
        raise  # the interpreter prints sys.exit("text") itself
    except BaseException as error:  # noqa: BLE001 - an uncaught exception ends a fresh interpreter so
        _flush_io()
        if isinstance(error, KeyboardInterrupt) and not _fast_exit:
            raise  # then only the interpreter can die by SIGINT (and the traceback shows launcher frames)
        _print_uncaught(error)
        _exit_status, _interrupted = 1, isinstance(error, KeyboardInterrupt)
        _forget_file(namespace)
        raise SystemExit(1) from None
    _flush_io()
    _forget_file(namespace)
    _exit_status = 0


def _flush_io() -> None:
    for stream in (sys.stderr, sys.stdout):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - as flush_io() in Python/pythonrun.c: errors are cleared
            pass


def _forget_file(namespace: dict[str, Any]) -> None:
    namespace.pop("__file__", None)
    namespace.pop("__cached__", None)


def _print_uncaught(error: BaseException) -> None:
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_frame.f_code.co_filename == __file__:
        traceback = traceback.tb_next  # the module's frames only, as a fresh interpreter shows them
    error.__traceback__ = traceback
    sys.last_type, sys.last_value, sys.last_traceback = type(error), error, traceback
    sys.excepthook(type(error), error, traceback)


def _status_of(code: object) -> int | None:
    """The exit status sys.exit(code) gives (None: one only the interpreter computes)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code if -(2**31) <= code < 2**31 else None
    return 1


def _exit_module() -> None:
    """The last atexit handler of a module's process: the rest of a fresh interpreter's exit, made cheap.

    Py_FinalizeEx would now tear down every module, the preloads included: each object the launcher
    imported gets decref'd, and each such write copies a page shared with the launcher (~4000 page
    faults, ~15 ms after av + numpy + PIL). So this does what a module can notice of that teardown, in
    CPython's order (Py_FinalizeEx, Python/pylifecycle.c): non-daemon threads were joined and the other
    atexit handlers ran before this one; stdio is flushed (status 120 if that fails); __main__ and the
    modules the module imported are dropped and cleared, and collected, so their objects' __del__ and
    finalizers run; stdio is flushed again; then death by SIGINT after an uncaught KeyboardInterrupt,
    else every C stdio stream is flushed (fflush(NULL), what a module's C code can have buffered) and
    the process ends with _exit. What it leaves out is tearing down the objects the launcher made
    before the fork, and the C libraries' own exit handlers and destructors (the preloads': FFmpeg,
    OpenBLAS, libjpeg free their memory there), which cost ~2 ms a module and nothing it could see.
    """
    if _exit_status is None:
        return  # the launcher itself, or an exit status only the interpreter knows: its full teardown
    status = _exit_status if _flush_std_files() else 120
    _release_module_state()
    _flush_io()  # as CPython's later flush (or the streams' dealloc): silent, the status stays
    if _interrupted:  # exit_sigint() in Modules/main.c
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        status = 128 + signal.SIGINT  # still alive: SIGINT is blocked
    ctypes.PyDLL(None).fflush(None)  # PyDLL: holds the GIL, so daemon threads stay stopped meanwhile
    os._exit(status)


def _flush_std_files() -> bool:
    """Flush sys.stdout and sys.stderr as flush_std_files() does; False if one failed."""
    flushed = True
    for stream in (sys.stdout, sys.stderr):
        if stream is None or getattr(stream, "closed", False):
            continue
        try:
            stream.flush()
        except Exception as error:  # noqa: BLE001 - reported as CPython reports it (for stdout only)
            flushed = False
            if stream is sys.stdout and sys.stderr is not None:
                print(f"Exception ignored in: {stream!r}", file=sys.stderr)
                error.__traceback__ = None  # raised by C code: CPython shows no frame
                sys.excepthook(type(error), error, None)
    return flushed


def _release_module_state() -> None:
    """Tear down __main__ and the modules the module imported, as Py_FinalizeEx and finalize_modules do."""
    atexit._clear()  # CPython drops the callbacks once they all ran (this one never returns)
    gc.collect()  # before modules are destroyed, as CPython does; it also decides the order below
    _delete_special()
    imported = []
    for name in reversed(sys.modules):  # newest first; the launcher's modules are all older
        if name in _launcher_modules:
            break
        imported.append(name)
    modules = [sys.modules.pop(name, None) for name in ["__main__", *reversed(imported)]]
    refs = [weakref.ref(module) for module in modules if isinstance(module, types.ModuleType)]
    del modules
    gc.collect()  # most go here, with all they alone held
    for ref in reversed(refs):  # those still alive are wiped, the last imported first
        module = ref()
        if module is not None:
            _clear_module_dict(module.__dict__)
    module = None
    gc.collect()


def _delete_special() -> None:
    # As finalize_modules_delete_special: where a module's values hide from the teardown of modules.
    sys.modules["builtins"]._ = None
    for name in _SYS_DELETES:
        setattr(sys, name, None)
    sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__


def _clear_module_dict(namespace: dict[str, Any]) -> None:
    # As _PyModule_ClearDict: names with one leading underscore first, then all but __builtins__.
    names = [name for name in namespace if isinstance(name, str)]
    for name in names:
        if name.startswith("_") and not name.startswith("__"):
            namespace[name] = None
    for name in names:
        if name != "__builtins__":
            namespace[name] = None


if __name__ == "__main__":
    _outcome = main(sys.argv[1:])
    if not isinstance(_outcome, _ModuleRun):
        sys.exit(_outcome)
    # A forked child, out of the serve loop: the module runs at the top level, and then the
    # interpreter ends as after any script (joins its threads, runs atexit, exits with its status).
    _run_as_main(_outcome)
