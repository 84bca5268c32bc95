"""The client of a launcher: `Launcher`, the handle on one launcher process, in the process that wants modules run.

It is for one single-threaded loop: `spawn`, then `fileno` in a selector and `collect` when it is
readable, and `supervise` while modules run. The launcher dies with the thread that started it
(PR_SET_PDEATHSIG) and when its socket closes; either way it takes its modules with it.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import procs
from ..errors import ChuteError
from .protocol import MESSAGE_LIMIT, PING, describe, is_startup_variable, kill_group, startup_variables, wait_or_kill

DEFAULT_PRELOAD = ("chute.modkit", "av", "numpy", "PIL.Image")

START_TIMEOUT = 120.0  # seconds for the launcher to import its preloads (a cold page cache, a busy host)
REPLY_TIMEOUT = 30.0  # seconds for it to answer one spawn (a fork takes milliseconds)
CLOSE_TIMEOUT = 10.0  # seconds for it to kill its modules and exit once its socket is closed
# While modules run, the client pings the launcher this often; a launcher found stopped (SIGSTOP from a
# module: issue 19) is killed at once, one that does not answer a ping within ANSWER_TIMEOUT too. Either
# way its modules come back lost, so a frozen launcher cannot hold a run past its timeouts.
PING_EVERY = 1.0
ANSWER_TIMEOUT = 10.0
STOPPED = "the module launcher was stopped (SIGSTOP?) and was killed"


class LauncherUnavailable(ChuteError):
    """The launcher cannot run this module (it cannot start, died, or cannot honour the request): run it fresh."""


@dataclass(frozen=True)
class Exit:
    """A module process ended (or was lost with its launcher)."""

    pid: int
    returncode: int | None  # as subprocess gives it: -N when killed by signal N; None when unknown
    reason: str | None = None  # why returncode is None


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
        self._ping_sent: float | None = None  # monotonic time of the ping not answered yet
        self._ping_next = 0.0

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

    def supervise(self, now: float) -> float | None:
        """Ping the launcher while its modules run; kill it if it is stopped or has not answered in time.

        Returns when to call again (None: no module to watch over). The modules of a killed launcher
        come back from `collect` as lost, with the reason.
        """
        if not self._modules or self._proc is None or self._sock is None or self._proc.poll() is not None:
            self._ping_sent = None
            return None
        if self._ping_sent is not None:
            if _stopped(self._proc):
                self._kill(STOPPED)
                return None
            if now - self._ping_sent >= ANSWER_TIMEOUT:
                self._kill(f"the module launcher did not answer for {ANSWER_TIMEOUT:g} s and was killed")
                return None
            return min(self._ping_sent + ANSWER_TIMEOUT, now + PING_EVERY)
        if now < self._ping_next:
            return self._ping_next
        try:
            self._sock.send(PING)
        except OSError:  # it died: collect() says so
            return None
        self._ping_sent, self._ping_next = now, now + PING_EVERY
        return now + PING_EVERY

    def close(self) -> None:
        """End the launcher (it kills every module group it started) and reap it. Idempotent."""
        if self._proc is not None:
            self._close_socket()  # its EOF: the launcher kills its modules' groups, reaps them, exits
            wait_or_kill(self._proc, CLOSE_TIMEOUT)
            for pid in self._modules:
                kill_group(pid)  # in case it was killed before it could
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
        if self._proc is not None and self._proc.poll() is None and _stopped(self._proc):
            self._kill(STOPPED)  # it would never answer
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
        self._ensure_poller().register(ours.fileno(), select.EPOLLIN)
        try:
            ready = self._reply(START_TIMEOUT)
        except LauncherUnavailable as error:
            raise LauncherUnavailable(f"cannot start the module launcher: {error}") from None
        if "ready" not in ready:
            self._kill()
            raise LauncherUnavailable(f"cannot start the module launcher: {ready.get('error')}")
        self.skipped = ready["skipped"]

    def _ensure_poller(self) -> select.epoll:
        if self._poller is None:
            self._poller = select.epoll()
            self._bell = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._poller.register(self._bell, select.EPOLLIN)
        return self._poller

    def _connected(self) -> socket.socket:
        if self._sock is None:  # it died, and that was reported: spawn starts it again
            raise LauncherUnavailable("the module launcher is not running")
        return self._sock

    def _request(self, request: bytes, fds: list[int]) -> dict[str, Any]:
        try:
            socket.send_fds(self._connected(), [request], fds)
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
        poll.register(self._connected(), select.POLLIN)
        while True:
            # In slices: a module just forked may SIGSTOP the launcher before it answers (issue 19).
            if not poll.poll(min(PING_EVERY, max(0.0, deadline - time.monotonic())) * 1000):
                if self._proc is not None and _stopped(self._proc):
                    self._kill(STOPPED)
                    raise LauncherUnavailable(STOPPED)
                if time.monotonic() < deadline:
                    continue
                self._kill()
                raise LauncherUnavailable(f"the module launcher did not answer within {timeout:g} s")
            message = self._receive()
            if message is None:
                reason = self._died()
                raise LauncherUnavailable(reason)
            self._ping_sent = None  # it answers
            if "exit" in message:
                self._exited(message)
            elif "pong" not in message:
                return message

    def _receive(self, flags: int = 0) -> dict[str, Any] | None:
        """One message from the launcher; None at its EOF (it died). BlockingIOError with MSG_DONTWAIT."""
        try:
            data = self._connected().recv(MESSAGE_LIMIT, flags)
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
                continue
            self._ping_sent = None  # it answers
            if "exit" in message:
                self._exited(message)

    def _exited(self, message: dict[str, Any]) -> None:
        self._modules.discard(message["exit"])
        self._exits.append(Exit(message["exit"], message["returncode"]))
        os.eventfd_write(self._bell, 1)

    def _died(self, reason: str | None = None) -> str:
        """The launcher is gone: reap it; its unreported modules are lost (and their groups killed)."""
        proc, self._proc = self._proc, None
        self._ping_sent = None
        self._close_socket()
        if proc is not None:
            returncode = wait_or_kill(proc, CLOSE_TIMEOUT)
            reason = reason or f"the module launcher died ({describe(returncode)})"
        reason = reason or "the module launcher died"
        for pid in sorted(self._modules):
            kill_group(pid)  # PR_SET_PDEATHSIG killed the module; this gets what it started in its group
            self._exits.append(Exit(pid, None, reason))
        if self._modules:
            os.eventfd_write(self._bell, 1)
        self._modules.clear()
        return reason

    def _kill(self, reason: str | None = None) -> None:
        if self._proc is not None:
            self._proc.kill()  # SIGKILL ends a stopped process too
        self._died(reason)

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._ensure_poller().unregister(self._sock.fileno())
            self._sock.close()
            self._sock = None


def _stopped(proc: subprocess.Popen) -> bool:
    try:
        return procs.stopped(proc.pid)
    except OSError:  # it died meanwhile, unreaped: not stopped (its death is seen as such next)
        return False
