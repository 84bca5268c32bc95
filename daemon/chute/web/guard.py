"""What every request passes before a page sees it: the Host allow-list, the token, a bounded body, the headers.

A plain ASGI middleware (no per-request task or copy of the body), in front of every route.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any

from .. import logs
from .tokens import Secrets, is_loopback

log = logs.get("chute.web")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "chute_session"
MAX_HEADERS = 16384  # bytes of a request's headers (server.MAX_HEAD bounds one still arriving)
MAX_BODY = 1 << 20  # bytes of a request body: a form or a list of run ids
OPEN_PATHS = ("/login", "/static/")  # the login form and the vendored script and style, which hold no secret
# No inline script or style anywhere: htmx's settings are in a <meta>, the page's code in /static/chute.js.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self';"
    " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class Guard:
    """Host allow-list (400), token (401), body size (413), and the security headers on every answer."""

    def __init__(self, app: ASGIApp, secrets: Secrets, hosts: set[str], login: Callable[[Scope], bytes]):
        self.app, self.secrets, self.hosts, self.login = app, secrets, {h.lower() for h in hosts}, login

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}

        started = False

        async def secured(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
                started = True
            await send(message)

        problem = self.refused(scope, headers)
        if problem is not None:
            await _answer(secured, *problem)
            return
        try:
            await self.app(scope, receive, secured)
        except Exception as exc:  # a bug, or the ledger unreadable: one event, one line, never a traceback
            log.error("web.error", path=scope["path"], error=f"{type(exc).__name__}: {exc}")
            if not started:
                await _answer(secured, 500, "text/plain", b"internal error: see the web process's log\n")

    def refused(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, bytes] | None:
        """(status, content type, body) of a refusal, or None to pass the request on."""
        if sum(len(k) + len(v) for k, v in scope["headers"]) > MAX_HEADERS:
            # h11 bounds a header block only while it is incomplete; one that arrives whole is bounded here.
            return 431, "text/plain", b"request headers too large\n"
        if not self.known_host(headers.get("host", "")):
            return 400, "text/plain", b"unknown Host: add it to web.allowed_hosts\n"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return 411, "text/plain", b"a request body needs a Content-Length\n"
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            return 413, "text/plain", b"request body too large\n"
        scope["chute.auth"] = auth = self.authenticated(headers)
        if auth is None and not scope["path"].startswith(OPEN_PATHS):
            if scope["path"].startswith("/api/"):
                return 401, "application/json", json.dumps({"error": "a token is needed"}).encode()
            return 401, "text/html; charset=utf-8", self.login(scope)
        return None

    def known_host(self, host: str) -> bool:
        """A loopback name or address, the listen host, or one of web.allowed_hosts (DNS rebinding)."""
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]").lower()
        return bool(name) and (is_loopback(name) or name in self.hosts)

    def authenticated(self, headers: dict[str, str]) -> str | None:
        """How the request proved it may come in: "bearer", "cookie" or "open" (no token set); None: it did not."""
        scheme, _, offered = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.secrets.is_token(offered.strip()):
            return "bearer"
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no cookie (http.cookies.CookieError and others)
            return "open" if self.secrets.token is None else None
        if COOKIE in cookie and self.secrets.is_session(cookie[COOKIE].value):
            return "cookie"
        return "open" if self.secrets.token is None else None


async def _answer(send: Send, status: int, content_type: str, body: bytes) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
