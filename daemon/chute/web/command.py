"""`chute web [--config F] [--listen HOST:PORT]`: the command line's side (argparse only at import)."""

from __future__ import annotations

import argparse
import socket

from ..errors import ChuteError, UsageError


def add_parser(add) -> None:
    sp = add("web", "serve the web page and JSON API (a separate process; docs/web.md)")
    sp.add_argument("--listen", metavar="HOST:PORT", help="overrides web.listen (default 127.0.0.1:8765)")


def run(args: argparse.Namespace) -> int:
    """Load the config and the token, bind exactly where told, serve until SIGTERM or SIGINT."""
    from .. import config as config_mod
    from .. import logs
    from ..config import listen_address
    from ..config_check import load_config
    from . import app, server, tokens

    config, _ = load_config(config_mod.find(args.config))
    listen = args.listen or config.web.listen
    try:
        host, port = listen_address(listen)
    except ValueError as exc:
        raise UsageError(f"--listen {listen!r} {exc}") from None
    secrets = tokens.load(config.web, host)
    logs.configure(config.log.format, config.log.level)
    log = logs.get("chute.web")
    sock = _bind(host, port)
    bound = sock.getsockname()
    log.info(
        "web.started", listen=f"{host}:{bound[1]}", login=secrets.token is not None, state_dir=str(config.state_dir)
    )
    if secrets.token is None:
        log.warning("web.open", reason="no token: anyone on this host can use the page (it listens on loopback only)")
    try:
        server.serve_socket(app.create(config, secrets, host), sock)
    finally:
        sock.close()
        log.info("web.stopped")
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on exactly `host` (never every address); ChuteError with the reason if it cannot."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ChuteError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ChuteError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock
