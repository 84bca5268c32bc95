"""The web page's token: where it comes from, and the cookie and CSRF values derived from it (contract §13)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from ..config import WebConfig
from ..errors import UsageError

CREDENTIAL = "chute-web-token"  # LoadCredential=chute-web-token:/etc/chute/web-token in chute-web.service


@dataclass(frozen=True)
class Secrets:
    """The token (None: a loopback page without one) and what the page hands out instead of it."""

    token: str | None
    key: bytes  # derives the session cookie and the CSRF token; never shown

    def session(self) -> str:
        """The login cookie's value: derived from the token, so the token itself never travels back."""
        return hmac.new(self.key, b"session", hashlib.sha256).hexdigest()

    def csrf(self, login: bool = False) -> str:
        """The CSRF token every form and htmx request carries; the login form's own, shown to anyone, differs."""
        return hmac.new(self.key, b"login-csrf" if login else b"csrf", hashlib.sha256).hexdigest()

    def is_token(self, offered: str) -> bool:
        return self.token is not None and hmac.compare_digest(offered.encode(), self.token.encode())

    def is_session(self, offered: str) -> bool:
        return hmac.compare_digest(offered.encode(), self.session().encode())

    def is_csrf(self, offered: str, login: bool = False) -> bool:
        return hmac.compare_digest(offered.encode(), self.csrf(login).encode())


def load(web: WebConfig, host: str) -> Secrets:
    """The token of `web` (its file, else the systemd credential); UsageError for a file others can read.

    Without a token the page serves only on a loopback address, and then needs no login: anyone who can
    reach 127.0.0.1 is on this host already (docs/web.md, "Security").
    """
    token = _read(web.token_file) if web.token_file is not None else _credential()
    if token is None:
        if not is_loopback(host):
            raise UsageError(
                f"chute web will not listen on {host} without a token: set web.token_file (mode 0600)"
                f" or the {CREDENTIAL} credential, or listen on 127.0.0.1"
            )
        return Secrets(None, secrets.token_bytes(32))
    return Secrets(token, hashlib.sha256(b"chute-web:" + token.encode()).digest())


def _read(path: Path) -> str:
    try:
        st = os.stat(path)
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise UsageError(
                f"web.token_file {path} is mode {stat.S_IMODE(st.st_mode):04o}: others could read the token;"
                f" chmod 600 {path}"
            )
        token = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read web.token_file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise UsageError(f"web.token_file {path} is not text") from None
    if len(token) < 16:
        raise UsageError(f"the token in {path} is shorter than 16 characters: make a longer one")
    return token


def _credential() -> str | None:
    """The token systemd passes with LoadCredential= (its folder is private to the service already)."""
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder or not (Path(folder) / CREDENTIAL).is_file():
        return None
    try:
        token = (Path(folder) / CREDENTIAL).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the {CREDENTIAL} credential: {exc}") from None
    return token or None


def is_loopback(host: str) -> bool:
    """A loopback address (127.0.0.0/8, ::1) or the name localhost."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
