"""The launcher process, ``python -m chute.launcher SOCKET_FD PARENT_PID PRELOAD...``: imports once, forks modules.

It dies with the thread of its client that started it (PR_SET_PDEATHSIG) and when its socket
closes, killing its modules' groups either way. A forked child leaves `serve` with the `ModuleRun`
it must become (child.py).
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from .. import procs
from .child import ModuleRun, Startup, ending, register_exit
from .protocol import MESSAGE_LIMIT, PING, kill_group


class _Server:
    """The launcher's loop: fork a module per request, report each exit, end with the client."""

    def __init__(self, sock: socket.socket, startup: Startup):
        self.sock, self.startup = sock, startup
        self.pid = os.getpid()
        self.max_fd = os.sysconf("SC_OPEN_MAX")
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ)
        self.children: dict[int, int] = {}  # pid -> pidfd, until its exit is reported
        self.serving = True

    def serve(self) -> ModuleRun | None:
        """Serve until the client goes (None), or return in a forked child with the module it must run."""
        while self.serving:
            for key, _ in self.selector.select():
                if key.fileobj is not self.sock:
                    self._reap(key.data)
                    continue
                run = self._receive()
                if run is not None:
                    return run
        self._stop()
        return None

    def _receive(self) -> ModuleRun | None:
        try:
            data, fds, flags, _ = socket.recv_fds(self.sock, MESSAGE_LIMIT, 2)
        except ConnectionResetError:
            data, fds, flags = b"", [], 0
        if not data:
            self.serving = False  # the client closed its end, or died
        elif data == PING and not fds:
            self._send({"pong": 1})
        elif flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != 2:
            self._send({"error": "a truncated request"})
        else:
            return self._spawn(json.loads(data), fds)
        for fd in fds:
            os.close(fd)
        return None

    def _spawn(self, request: dict[str, Any], fds: list[int]) -> ModuleRun | None:
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

    def _fork(self, request: dict[str, Any], fds: list[int]) -> ModuleRun | None:
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
            return ModuleRun(request["argv"], request["env"], self.startup)
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
        procs.die_with_parent(signal.SIGKILL)  # OSError: the fork fails, the launcher says why
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
            kill_group(pid)
        for pid in self.children:
            os.waitpid(pid, 0)


def _threads_error(joined: bool = False) -> dict[str, str] | None:
    """Why the launcher may not fork now, if it may not; `joined`: threads were just joined, wait for them to go."""
    threads = procs.threads_after_joins() if joined else procs.thread_count()
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
    procs.flush_c_streams()


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
    import ctypes  # here: the one library call of the launcher that is not Linux's (procs.py)

    maps = procs.read("self", "maps").decode(errors="surrogateescape").splitlines()
    paths = {line.split(maxsplit=5)[5].strip() for line in maps if "openblas" in line}
    for path in paths:
        shutdown = getattr(ctypes.CDLL(path), "blas_thread_shutdown_", None)  # OpenBLAS's, not libc's
        if shutdown is not None:
            shutdown()


def main(argv: Sequence[str]) -> ModuleRun | int:
    """Run the launcher; returns its exit status, or, in a forked child, the module to run."""
    fd, parent, preload = int(argv[0]), int(argv[1]), argv[2:]
    procs.die_with_parent(signal.SIGKILL)  # OSError: the launcher cannot start, the client runs modules fresh
    if os.getppid() != parent:  # the client died before prctl
        return 1
    startup = Startup.take()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an inherited SIG_IGN would reap its children for it
    register_exit()
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
    skipped = _preload(preload)
    _stop_blas_threads()
    error = _threads_error(joined=True)
    if error is not None:
        return {"error": f"{error['error']} after importing {', '.join(preload)}"}
    gc.collect()
    gc.freeze()  # what is imported now stays shared with every child, not copied by their collector
    ending.launcher_modules = frozenset(sys.modules)
    return {"ready": os.getpid(), "skipped": skipped}
