"""The sd_notify protocol, spoken directly over the NOTIFY_SOCKET datagram socket.

See sd_notify(3): every message is one datagram of newline-separated
``KEY=VALUE`` assignments sent to the AF_UNIX socket named by $NOTIFY_SOCKET,
either a file system path or, when it starts with ``@``, an abstract address.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping

import structlog

# What systemd hands the main process and no module process should see: a
# module holding NOTIFY_SOCKET could tell systemd the service is ready or
# stopping, and the LISTEN_* variables describe descriptors it does not own.
# See sd_notify(3), sd_watchdog_enabled(3), sd_listen_fds(3).
SERVICE_MANAGER_VARIABLES = frozenset(
    {
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
    }
)

# A blocked send must not stall the service loop for long: the notification
# queue of systemd is large, and a loop that stalls here would only earn a
# watchdog kill anyway.
SEND_TIMEOUT_S = 1.0


class Notifier:
    """Tells the service manager about readiness, status, reloads and liveness.

    Every method is a no-op when $NOTIFY_SOCKET is not set, and none raises:
    the daemon's work never depends on systemd hearing about it.
    """

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._raw_address = environ.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(self._raw_address)
        self.enabled = bool(self._raw_address)
        self.watchdog_interval = _watchdog_interval(environ)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._last_status: str | None = None
        self._failure_logged = False

    def ready(self) -> None:
        """Startup or a reload is complete."""
        self._send("READY=1")

    def status(self, text: str) -> None:
        """A one-line status for `systemctl status`, sent only when it changed."""
        if text == self._last_status:
            return
        if self._send(f"STATUS={_one_line(text)}"):
            self._last_status = text

    def reloading(self) -> None:
        """A reload has begun; READY=1 ends it."""
        # MONOTONIC_USEC lets systemd (253+) match this message to the reload
        # it asked for with Type=notify-reload; older versions ignore it.
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={now_usec}")

    def stopping(self) -> None:
        """Shutdown has begun."""
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        """The service is alive and healthy."""
        self._send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        """Asks for `seconds` more before the current start or stop times out."""
        self._send(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def close(self) -> None:
        """Releases the socket; a later message opens a new one."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _send(self, message: str) -> bool:
        """Sends one datagram; returns whether it was sent."""
        if not self.enabled:
            return False
        if self._address is None:
            self._log_failure(OSError("not an AF_UNIX address (a path or @name)"))
            return False
        try:
            with self._lock:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.settimeout(SEND_TIMEOUT_S)
                self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            self._log_failure(exc)
            return False
        return True

    def _log_failure(self, exc: OSError) -> None:
        # Once per notifier: a missing socket fails every few seconds
        # (WATCHDOG=1), and one line says all there is to say.
        if self._failure_logged:
            return
        self._failure_logged = True
        log = structlog.get_logger("chute.systemd")
        log.warning("systemd.notify_failed", socket=self._raw_address, error=str(exc))


def module_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for module processes: the daemon's, minus what systemd gave it alone.

    NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID and LISTEN_FDS/LISTEN_PID/
    LISTEN_FDNAMES are dropped; INVOCATION_ID and the rest are kept.
    """
    return {k: v for k, v in environ.items() if k not in SERVICE_MANAGER_VARIABLES}


def status_line(
    queued: int, running: int, done: int, failed: int, waiting: int = 0, paused: int = 0, outside: int = 0
) -> str:
    """The STATUS= text: "2 queued, 1 running, 40 done, 3 failed", "(1 waiting: deferred)" when some are,
    "; paused: 2 inboxes" while some are paused and "; 1 inbox outside its schedule" while some are."""
    deferred = f" ({waiting} waiting: deferred)" if waiting else ""
    line = f"{queued} queued{deferred}, {running} running, {done} done, {failed} failed"
    if paused:
        line += f"; paused: {paused} inbox{'es' if paused != 1 else ''}"
    if outside:
        line += f"; {outside} inbox{'es' if outside != 1 else ''} outside {'its' if outside == 1 else 'their'} schedule"
    return line


def _socket_address(value: str) -> str | bytes | None:
    """The sendto() address for $NOTIFY_SOCKET, or None if it is not an AF_UNIX one."""
    if value.startswith("/"):
        return value
    if value.startswith("@"):
        # Abstract namespace: the name starts with a NUL byte instead of "@".
        return b"\0" + value[1:].encode()
    # Empty, or a form this module does not speak (vsock: from systemd 253).
    return None


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC (sd_watchdog_enabled(3))."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = environ.get("WATCHDOG_PID")
    # Inherited by a process the watchdog is not meant for (a child, or a
    # daemon re-executed under another pid): it must not ping.
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    return usec / 2 / 1_000_000


def _one_line(text: str) -> str:
    # A newline would start a new assignment inside the datagram.
    return " ".join(text.splitlines())
