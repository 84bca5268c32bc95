"""`chute web` as a user starts it: where it refuses to start, where it listens, what an attacker costs it.

Real `chute web` processes on real sockets (contract §13; docs/web.md).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import CHUTE, Setup, wait_until
from tests.web import Web, csrf_of

TOKEN = "0123456789abcdef-token"


def chute_web(config: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    argv = [str(CHUTE), "web", "--config", str(config), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)


def one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    s = Setup(tmp_path)
    s.inbox("in")
    return s


def test_it_refuses_a_token_file_others_can_read_and_a_wide_address_without_a_token(setup, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o644)
    loose = setup.write("loose", web={"token_file": str(token)})
    assert "mode 0644" in one_line(chute_web(loose, "--listen", "127.0.0.1:0"))
    bare = setup.write("bare")
    assert "without a token" in one_line(chute_web(bare, "--listen", "0.0.0.0:0"))
    assert "without a token" in one_line(chute_web(bare, "--listen", "[::]:0"))


def test_without_a_token_it_serves_loopback_openly_and_still_wants_csrf_and_a_known_host(setup):
    """No token: no login on 127.0.0.1 (docs/web.md), and the daemon being down is said, not an error."""
    config = setup.write()
    with Web(config, token=None) as web:
        inboxes = web.get("/api/inboxes").json()
        assert inboxes["daemon"]["up"] is False and inboxes["inboxes"][0]["state"] == "daemon down"
        assert "Log out" not in web.get("/").text
        assert web.get("/", headers={"Host": "attacker.example"}).status == 400  # DNS rebinding
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert web.post("/inboxes/pause", b"inbox=x", headers=form).status == 403
        csrf = csrf_of(web.get("/").text)
        answer = web.post("/inboxes/pause", f"csrf={csrf}&inbox={setup.root / 'in'}".encode(), headers=form)
        assert answer.status == 503 and "no daemon" in answer.text  # said, in one line
        assert any(e["event"] == "web.open" for e in web.events())


def test_the_token_can_come_from_the_systemd_credential(setup, tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "chute-web-token").write_text(TOKEN + "\n")
    config = setup.write()
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    with Web(config, token=TOKEN, listen="0.0.0.0:0", env=env) as web:
        assert web.get("/api/inboxes").status == 200
        assert web.get("/api/inboxes", auth=False).status == 401


def test_it_listens_only_on_the_address_it_is_told(setup):
    """`--listen 127.0.0.1:PORT` is not reachable on 127.0.0.2, another address of this host (Tdarr #297)."""
    with Web(setup.write(), token=None, listen="127.0.0.1:0") as web:
        assert web.get("/api/inboxes").status == 200
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", web.port), timeout=5).close()


def test_idle_slow_and_malformed_clients_never_stop_it_answering(setup):
    """300 idle connections, a slowloris, huge headers and garbage: every real request is still answered."""
    with Web(setup.write(), token=None) as web:
        address = ("127.0.0.1", web.port)
        idle = [socket.create_connection(address, timeout=10) for _ in range(300)]
        slow = socket.create_connection(address, timeout=10)
        slow.sendall(b"GET /api/inboxes HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for _ in range(3):
                slow.sendall(b"X-Slow: 1\r\n")
                assert web.get("/api/inboxes").status == 200
                time.sleep(0.2)  # the slowloris's own pace: a header line now and then
            huge = web.get("/api/inboxes", headers={"X-Huge": "x" * 100_000})
            assert huge.status in (400, 431)
            for garbage in (b"\x00\xff" * 100 + b"\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"NOTHTTP\r\n\r\n"):
                with socket.create_connection(address, timeout=10) as s:
                    s.sendall(garbage)
                    assert s.recv(100).startswith(b"HTTP/1.1 400") or s.recv(100) == b""
            assert web.get("/api/inboxes").status == 200
            # The idle connections are closed by the server: the oldest first, the rest at their deadline.
            wait_until(lambda: all(_closed_by_server(s) for s in idle[:200]), 30)
        finally:
            for s in [*idle, slow]:
                s.close()
        assert web.get("/api/inboxes").status == 200
        assert json.dumps(web.events()).count("web.error") == 0


def _closed_by_server(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)
