"""The web page in a real browser (issue 23, contract §13): what a desk does with it, against a real daemon.

One daemon and one `chute web` serve the module; chromium (tests/browser/conftest.py) logs in with the
token, watches a run's progress advance without a reload, opens a finished media_ingest run and plays its
proxy, retries a failure that then succeeds, and pauses an inbox. With CHUTE_SCREENSHOTS=1 the tests also
write the screenshots docs/web.md shows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import screenshot
from tests.harness import Daemon, Setup, drop, files, ledger_runs, wait_until
from tests.web import Web

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "a-token-for-the-desk-0123456789"
# Inputs that tell the test module what to do, before it copies (tests/harness.py's COPY_MODULE):
# `failonce=FLAG` fails (exit 3) until FLAG exists, and makes FLAG as it fails.
FAIL_ONCE = """\
import os, sys
_args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
with open(_args["--input"], "rb") as _f:
    _first = _f.readline().strip()
if _first.startswith(b"failonce=") and os.environ["CHUTE_STEP"] == "first":
    _flag = _first[9:].decode()
    if not os.path.exists(_flag):
        open(_flag, "w").close()
        print("copy: the first attempt of this input fails", file=sys.stderr)
        sys.exit(3)
"""


@dataclass
class Desk:
    root: Path
    config: Path
    inboxes: dict[str, dict[str, Any]]
    daemon: Daemon
    web: Web
    url: str

    def inbox(self, name: str) -> Path:
        return Path(self.inboxes[name]["path"])


@pytest.fixture(scope="module")
def desk(tmp_path_factory, browser) -> Iterator[Desk]:
    """A daemon with four inboxes (live, media, flaky, pausable) and `chute web` over it, with a token."""
    root = tmp_path_factory.mktemp("desk")
    setup = Setup(root, workers=3)
    setup.config["shutdown_timeout"] = 2  # the slow progress run may still be going at the end: release it, don't wait
    setup.config["modules_path"].append(str(ROOT / "modules"))
    setup.config["jobs_path"].append(str(ROOT / "jobs"))
    main = setup.defs / "modules" / "copy" / "main.py"
    main.write_text(FAIL_ONCE + main.read_text())
    inboxes = {name: setup.inbox(name) for name in ("live", "flaky", "pausable")}
    inboxes["media"] = setup.inbox("media", job="media_ingest")
    token = root / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    config = setup.write(web={"token_file": str(token)})
    daemon = Daemon(config).start()
    try:
        with Web(config, TOKEN) as web:
            yield Desk(root, config, inboxes, daemon, web, f"http://127.0.0.1:{web.port}")
    finally:
        problems = daemon.finish()
        assert not problems, problems


@pytest.fixture
def page(browser, desk: Desk) -> Iterator[Any]:
    """A fresh browser context (no cookie yet), logged in with the token as a user does."""
    context = browser.new_context(base_url=desk.url, viewport={"width": 1280, "height": 900})
    try:
        p = context.new_page()
        p.goto("/")
        assert p.locator("h1").inner_text() == "Log in"  # no token yet: the login form, nothing else
        p.fill("input[name=token]", TOKEN)
        p.click("form.login button")
        p.wait_for_url(desk.url + "/")
        yield p
    finally:
        context.close()


def test_a_wrong_token_is_refused_and_the_right_one_opens_the_overview(browser, desk: Desk):
    context = browser.new_context(base_url=desk.url)
    try:
        p = context.new_page()
        p.goto("/")
        p.fill("input[name=token]", "not-the-token")
        p.click("form.login button")
        assert p.locator(".problem").inner_text() == "That is not the token."
        p.fill("input[name=token]", TOKEN)
        p.click("form.login button")
        p.wait_for_url(desk.url + "/")
        assert p.locator("h1").first.inner_text() == "Inboxes"
        assert p.locator("table.inboxes tr[data-inbox]").count() == 4
    finally:
        context.close()


def progress_of(page: Any) -> float | None:
    bar = page.locator("article.run progress[value]")
    return float(bar.first.get_attribute("value")) if bar.count() else None


def test_a_running_runs_progress_advances_on_the_overview_without_a_reload(page, desk: Desk):
    page.evaluate("window.notReloaded = true")
    drop(desk.inbox("live"), "slow.bin", b"sleep=10\n")  # the test module reports its progress for 10 s a step
    first = wait_until(lambda: progress_of(page), 30)
    assert page.locator("article.run header a").first.inner_text() == "slow.bin"
    screenshot(page, "overview")
    wait_until(lambda: (progress_of(page) or 0) > first, 30)
    assert page.evaluate("window.notReloaded") is True  # htmx swapped the live part; the page stayed


def finished_run(config: Path, name: str, state: str) -> Any:
    return next((r for r in ledger_runs(config) if r.input_name == name and r.state.value == state), None)


def test_a_finished_media_run_shows_its_timeline_artifacts_and_plays_its_proxy(page, desk: Desk, clip_template):
    shutil.copyfile(clip_template, desk.root / "clip.mp4")
    os.replace(desk.root / "clip.mp4", desk.inbox("media") / "clip.mp4")
    run = wait_until(lambda: finished_run(desk.config, "clip.mp4", "succeeded"), 120)
    page.goto(f"/runs/{run.run_id}")
    assert page.locator("#run-state").inner_text() == "succeeded"
    timeline = page.locator("svg.chart[aria-label^='Timeline']")
    assert timeline.locator("rect").count() == 6  # the six entries of media_ingest, one bar each
    for name in ("contact_sheet.jpg", "waveform.png"):  # images that loaded, not broken ones
        img = page.locator(f"img[src$='{name}']")
        wait_until(lambda img=img: img.evaluate("i => i.complete && i.naturalWidth > 0"), 20)
    assert "LUFS" in page.locator("dl.loudness").inner_text()
    table = page.locator("table.checksums").inner_text()  # every input file's hashes, as the manifest has them
    for i in json.loads((Path(run.result) / "manifest.json").read_text())["inputs"]:
        assert i["name"] in table and i["hashes"]["xxh128"] in table
    video = page.locator("video")
    video.evaluate("v => { v.muted = true; return v.play(); }")
    wait_until(lambda: video.evaluate("v => v.readyState >= 2 && v.currentTime > 0"), 20)
    assert video.evaluate("v => v.error") is None
    video.evaluate("v => v.pause()")
    screenshot(page, "run")
    # What lets the player seek: byte ranges of the proxy (206), and 416 for one past its end.
    proxy = Path(run.result) / "proxy.mp4"
    part = desk.web.get(f"/files/{run.run_id}/proxy.mp4", headers={"Range": "bytes=100-199"})
    assert (part.status, part.headers["content-range"]) == (206, f"bytes 100-199/{proxy.stat().st_size}")
    assert part.body == proxy.read_bytes()[100:200]
    past = desk.web.get(f"/files/{run.run_id}/proxy.mp4", headers={"Range": f"bytes={proxy.stat().st_size}-"})
    assert past.status == 416


def test_a_failure_retried_from_the_page_succeeds(page, desk: Desk):
    flag = desk.root / "failed-once"
    drop(desk.inbox("flaky"), "flaky.bin", f"failonce={flag}\n".encode())
    failed = wait_until(lambda: finished_run(desk.config, "flaky.bin", "failed"), 60)
    page.goto(f"/runs/{failed.run_id}")
    assert page.locator("#run-reason").inner_text() == "exited with status 3"
    assert "the first attempt of this input fails" in page.locator("pre.log").first.inner_text()
    page.goto("/failures")
    row = page.locator(f"tr[data-run='{failed.run_id}']")
    row.locator("button", has_text="Retry").click()
    assert page.locator("h1").inner_text() == "Retried 1"
    retried = wait_until(lambda: finished_run(desk.config, "flaky.bin", "succeeded"), 60)
    assert files(Path(desk.inboxes["flaky"]["archive"])) == ["flaky.bin"]
    page.goto("/runs?q=flaky.bin")
    states = {
        r.get_attribute("data-run"): r.locator("td.state").inner_text()
        for r in page.locator("table.runs tr[data-run]").all()
    }
    assert states[retried.run_id] == "succeeded"


def test_an_inbox_paused_from_the_page_claims_nothing_until_resumed(page, desk: Desk):
    inbox = desk.inboxes["pausable"]["path"]
    row = page.locator(f"tr[data-inbox='{inbox}']")
    row.locator("button", has_text="Pause").click()
    wait_until(lambda: row.locator("td.state").inner_text() == "paused", 20)
    drop(desk.inbox("pausable"), "held.bin", b"held\n")
    # Dropped at the same time into a watched inbox, `control.bin` is done while `held.bin` waits.
    drop(desk.inbox("flaky"), "control.bin", b"control\n")
    wait_until(lambda: "control.bin" in files(Path(desk.inboxes["flaky"]["archive"])), 60)
    assert files(desk.inbox("pausable")) == ["held.bin"]
    assert not [r for r in ledger_runs(desk.config) if r.input_name == "held.bin"]
    row.locator("button", has_text="Resume").click()
    wait_until(lambda: row.locator("td.state").inner_text() == "watching", 20)
    wait_until(lambda: files(Path(desk.inboxes["pausable"]["archive"])) == ["held.bin"], 60)


def test_the_stats_page_charts_what_ran(page, desk: Desk):
    page.goto("/stats")
    assert page.locator("svg.chart[aria-label='Runs per hour (UTC), last 48 hours'] rect").count() == 48
    times = page.locator("#times svg").text_content() or ""
    assert "proxy" in times and "copy" in times  # the media run's modules and the test module, timed
    assert page.locator("#bytes-out").inner_text() != "0 B"
    # flaky.bin failed once (its run now says retried), then succeeded: twostep's failure rate is not 0.
    rates = page.locator("svg[aria-label='Failure rate by job']").text_content() or ""
    twostep = re.search(r"twostep([\d.]+) % of (\d+)", rates)
    assert twostep and float(twostep[1]) > 0 and int(twostep[2]) >= 4, rates
    screenshot(page, "stats")
