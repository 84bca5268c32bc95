"""A real HTTP webhook on 127.0.0.1 for the notification tests: what Apprise's json:// posts arrive at.

`Webhook` (on `port`, or a free one) answers each POST with the next of `statuses` (then 200) and keeps the
JSON bodies it answered 200; `hold()` makes it keep every request open, unanswered,
until `release()` (a receiver that hangs). `refused_url()` names a port where
nothing listens (a receiver that refuses).
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Webhook:
    def __init__(self, statuses: tuple[int, ...] = (), port: int = 0):
        self.statuses = list(statuses)
        self.messages: list[dict[str, Any]] = []
        self.received = 0  # requests seen, answered or held
        self.lock = threading.Lock()
        self._released = threading.Event()
        self._released.set()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, credentials: str = "", **params: Any) -> str:
        """The Apprise URL of this webhook, e.g. url("user:secret", rto=60)."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        auth = f"{credentials}@" if credentials else ""
        return f"json://{auth}127.0.0.1:{self.port}/hook" + (f"?{query}" if query else "")

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def answered(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.messages)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    hook.received += 1
                hook._released.wait()
                with hook.lock:
                    status = hook.statuses.pop(0) if hook.statuses else 200
                    if status == 200:
                        hook.messages.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def refused_url(credentials: str = "") -> str:
    """An Apprise json:// URL on a 127.0.0.1 port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    auth = f"{credentials}@" if credentials else ""
    return f"json://{auth}127.0.0.1:{port}/hook"


def body_fields(message: dict[str, Any]) -> dict[str, str]:
    """The `key: value` lines of a notification's body as a dict."""
    return dict(line.split(": ", 1) for line in message["message"].splitlines())
