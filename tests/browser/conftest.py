"""The browser tests' fixtures: Debian's chromium driven by Playwright, and a real `chute web` process.

Browsers are never downloaded (`playwright install` is not run): Playwright drives the chromium that
tests/system-packages.txt installs. Without it the tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import CHUTE, strip_priority, wait_until

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",  # the tests run as root in a container, where chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "images"


def _missing(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: CI must run the browser tests (tests/system-packages.txt, the test extra)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless chromium for the session; each test opens its own context (its own cookies)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed (the test extra: `make venv`)")
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"{CHROMIUM} is missing (apt-get install chromium; `make test` does it as root)")
    with sync_playwright() as p:
        # launch() gives the browser a fresh user-data-dir of its own, removed when it closes.
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


def screenshot(page: Any, name: str) -> None:
    """docs/images/NAME.png from this page, only when CHUTE_SCREENSHOTS=1 (so CI leaves the tree clean)."""
    if os.environ.get("CHUTE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


class Web:
    """One `chute web` process on a free loopback port; `stop` ends it with SIGTERM and checks its log."""

    def __init__(self, config: Path):
        self.log_path = config.with_name("web.log")
        self.log = open(self.log_path, "ab")
        argv = [str(CHUTE), "web", "--config", str(config), "--listen", "127.0.0.1:0"]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        started = wait_until(lambda: self.event("web.started") or self.proc.poll() is not None, 30)
        assert started is not True and self.proc.poll() is None, self.log_path.read_text()
        self.url = "http://" + started["listen"]

    def event(self, name: str) -> dict[str, Any] | None:
        for line in self.log_path.read_text(errors="replace").splitlines():
            line = strip_priority(line)
            if line.startswith("{") and (ev := json.loads(line)).get("event") == name:
                return ev
        return None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.log.close()
        text = self.log_path.read_text(errors="replace")
        # uvicorn finishes the requests in progress, then ends by the signal it caught (systemd counts
        # that as a clean stop, SuccessExitStatus's default).
        assert code in (0, -signal.SIGTERM), text
        assert not re.search(r"Traceback|web\.error", text), text
