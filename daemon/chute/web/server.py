"""`chute web`'s HTTP server: uvicorn, bounded so idle, slow or malformed clients cost it next to nothing.

uvicorn closes a connection idle between requests (`timeout_keep_alive`), refuses a header block over
`h11_max_incomplete_event_size`, and answers 503 past `limit_concurrency`; it has no deadline on the first
request of a connection, nor on a request sent a byte at a time. `BoundedH11` adds both: a connection
must send a whole request head within HEAD_TIMEOUT, and past MAX_IDLE connections without a request in
progress, a new one closes the oldest (as metrics_http's BoundedServer does for the daemon).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Iterator
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT = 10.0  # seconds for a connection to send a whole request head
MAX_IDLE = 64  # connections without a request in progress
MAX_HEAD = 16384  # bytes of a request line and its headers
LIMIT = 256  # connections and requests at once; past it, 503
TICK_S = 1.0  # seconds between the server's looks at its exit flag


class BoundedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request head and a bound on idle connections."""

    idle: ClassVar[dict[BoundedH11, None]] = {}  # oldest first: one server per process

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_timer: asyncio.TimerHandle | None = None
        self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._stop_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._wait_for_head()

    def _wait_for_head(self) -> None:
        self._stop_waiting()
        self.head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_late)
        self.idle[self] = None
        while len(self.idle) > MAX_IDLE:
            oldest = next(iter(self.idle))
            oldest._stop_waiting()
            oldest.transport.close()

    def _stop_waiting(self) -> None:
        if getattr(self, "head_timer", None) is not None:
            self.head_timer.cancel()  # type: ignore[union-attr]
            self.head_timer = None
        self.idle.pop(self, None)

    def _head_late(self) -> None:
        self.head_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self._stop_waiting()
            self.transport.close()


class Server(uvicorn.Server):
    """uvicorn's server, whose SIGTERM or SIGINT is a clean stop (exit 0, contract §7), not raised again after it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's own re-raises the signal once the server has stopped, so the process dies of it.
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def main_loop(self) -> None:
        # uvicorn's wakes every 0.1 s to look at its exit flag: 0.25 % of a CPU while nobody asks anything.
        # Once a second is enough (on_tick's Date header changes no more often); a stop waits up to 1 s.
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000
            await asyncio.sleep(TICK_S)


def serve_socket(app: Any, sock: socket.socket) -> None:
    """Serve `app` on the bound `sock` until SIGINT or SIGTERM (uvicorn's handlers: requests in progress finish)."""
    config = uvicorn.Config(
        app,
        http=BoundedH11,
        lifespan="off",
        access_log=False,
        log_config=None,
        log_level="warning",
        server_header=False,
        proxy_headers=False,
        limit_concurrency=LIMIT,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=MAX_HEAD,
        timeout_graceful_shutdown=5,
    )
    Server(config).run(sockets=[sock])
