"""Apprise as notify.py uses it: whether a URL is usable, the URL with its secrets hidden, and Apprise's log records.

Apart from notify.py so that config.py can check a target's URL without importing the notifications.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from typing import Any


class _Capture(logging.Handler):
    """Keeps Apprise's warnings of the current sending thread as the error of its attempt."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()

    @property
    def records(self) -> list[str] | None:
        return getattr(self.local, "records", None)

    @records.setter
    def records(self, value: list[str] | None) -> None:
        self.local.records = value

    def emit(self, record: logging.LogRecord) -> None:
        if self.records is not None:
            self.records.append(record.getMessage())


CAPTURE = _Capture()


def _quiet_apprise() -> None:
    """Apprise's and urllib3's lines stay out of chute's log: they may hold a URL's secrets.

    (urllib3 logs each request's path at debug, and a Discord or Slack webhook's
    token is in its path.) Their warnings become the `error` of notify.failed.
    """
    for name in ("apprise", "urllib3"):
        logger = logging.getLogger(name)
        if CAPTURE not in logger.handlers:
            logger.addHandler(CAPTURE)
        logger.propagate = False
        logger.setLevel(logging.WARNING)


def instantiate(url: str):
    """Apprise's plugin for `url`, or None when Apprise cannot use it."""
    _quiet_apprise()
    import apprise

    return apprise.Apprise.instantiate(url)


def url_problem(url: str) -> str | None:
    """Why Apprise cannot use `url` (never quoting it: it may hold a password), or None."""
    scheme = url.partition("://")[0] if "://" in url else ""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return "must be an Apprise URL, SCHEME://..., e.g. json://host:8080/hook or mailto://user:pass@example.com"
    if instantiate(url) is None:
        return f"Apprise cannot use this {scheme}:// URL (an unknown scheme, or a part missing or malformed)"
    return None


def masked_url(url: str, plugin: Any = None) -> str:
    """`url` for a log line: its scheme and host as Apprise prints them with privacy on (a host that is
    a token, as Telegram's, shortened), with any user, password, path and query starred. (Apprise's
    privacy form shows HTTP headers and json:// paths, which may carry a bearer token.)"""
    plugin = plugin or instantiate(url)
    if plugin is None:
        return url.partition("://")[0] + "://****"
    shown = urllib.parse.urlsplit(plugin.url(privacy=True))
    user, _, host = shown.netloc.rpartition("@")
    rest = "/****" if shown.path.strip("/") or shown.query else ""
    return f"{shown.scheme}://{'****@' if user else ''}{host}{rest}"


def mask(text: str, url: str, masked: str) -> str:
    """`text` with every part of `url` that its masked form hides replaced by ****."""
    shown = set(_tokens(masked))
    for secret in sorted(set(_tokens(url)) - shown, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "****")
    return text


def _tokens(url: str) -> list[str]:
    return [t for t in re.split(r"[/:@?&=#,+;%\s]+", url) if t]
