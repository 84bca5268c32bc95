"""The CLI's side of the control socket: one request, one answer (control.py is the daemon's side)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from .control import SOCKET, encode
from .errors import ChuteError
from .model import display_path
from .yamlfile import did_you_mean

TIMEOUT = 60.0  # seconds for an answer: a held `wait` is answered within control.WAIT_MAX
MAX_ANSWER = 1 << 24


class NoDaemon(ChuteError):
    """Nothing answers on the state_dir's control socket."""


def request(state_dir: Path, message: dict[str, Any], timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one request to the daemon on `state_dir`; its answer, or ChuteError with its error."""
    path = state_dir / SOCKET
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise NoDaemon(f"no daemon is running on {state_dir} ({SOCKET}: {exc.strerror or exc})") from exc
        try:
            sock.sendall(encode(message))
            answer = _read_line(sock)
        except TimeoutError as exc:
            raise ChuteError(f"the daemon on {state_dir} did not answer within {timeout:.0f} s") from exc
        except OSError as exc:
            raise ChuteError(f"the daemon on {state_dir} closed the control socket: {exc.strerror or exc}") from exc
    finally:
        sock.close()
    if not answer:
        raise ChuteError(f"the daemon on {state_dir} closed the control socket without answering (stopping?)")
    try:
        reply = json.loads(answer)
    except ValueError as exc:
        raise ChuteError(f"the daemon on {state_dir} answered something that is not JSON") from exc
    if not reply.get("ok"):
        raise ChuteError(str(reply.get("error") or "the daemon refused the request"))
    return reply


def _read_line(sock: socket.socket) -> bytes:
    data = bytearray()
    while b"\n" not in data and len(data) < MAX_ANSWER:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return bytes(data).split(b"\n", 1)[0]


def inbox_paths(file: Path, configured: list[str], names: list[str]) -> list[str] | None:
    """The configured paths the command line names (None: all); ChuteError for one that is no inbox."""
    if not names:
        return None
    found = []
    for name in names:
        # As configured (relative to the config file's folder) or as the shell sees it (relative to here).
        tries = {os.path.realpath(name), os.path.realpath(file.parent / name)}
        match = [p for p in configured if p in tries]
        if not match:
            raise ChuteError(f"no inbox {name!r} in {display_path(file)}{did_you_mean(name, configured)}")
        found.append(match[0])
    return found
