"""The browser tests' fixture: Debian's chromium driven by Playwright (`chute web` itself: tests/web.py).

Browsers are never downloaded (`playwright install` is not run): Playwright drives the chromium that
tests/system-packages.txt installs. Without it the tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
