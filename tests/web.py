"""`chute web` as a real subprocess, and plain HTTP requests to it (http.client: what a script would use)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import CHUTE, wait_until


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class Web:
    """One `chute web` process on a free loopback port; use as a context manager so nothing outlives the test."""

    def __init__(self, config: Path, token: str | None = None, listen: str = "127.0.0.1:0", env: dict | None = None):
        self.config, self.token, self.listen = config, token, listen
        self.log_path = config.with_name(f"web.{uuid.uuid4().hex[:6]}.log")
        self.env = dict(os.environ) | (env or {})
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> Web:
        with open(self.log_path, "ab") as log:
            argv = [str(CHUTE), "web", "--config", str(self.config), "--listen", self.listen]
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env
            )
        started = wait_until(lambda: self._event("web.started") or self.proc.poll() is not None, 30)
        assert started is not True and self.proc.poll() is None, self.text()
        self.host = started["listen"].rsplit(":", 1)[0]
        self.port = int(started["listen"].rsplit(":", 1)[1])
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> int:
        """SIGTERM, as systemd stops it: a clean stop exits 0, and the log has no traceback."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        assert code == 0, self.text()
        assert "Traceback" not in self.text(), self.text()
        return code

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.text().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                found.append({"event": "non-json", "line": line})
        return found

    def _event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events() if e.get("event") == name), None)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | dict | list | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Answer:
        """One request on a new connection; `auth` sends the Bearer token (when the web process has one)."""
        sent = {"Host": f"127.0.0.1:{self.port}"}
        if auth and self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        sent |= headers or {}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=sent)
            reply = conn.getresponse()
            return Answer(reply.status, reply.headers, reply.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return self.request("POST", path, body=body, **kw)


def csrf_of(page: str) -> str:
    """The CSRF token a page carries in its forms."""
    return re.search(r'name="csrf-token" content="([0-9a-f]+)"', page).group(1)
