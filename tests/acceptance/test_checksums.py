"""Deliveries verified before they run (contract §12), through a real daemon, as a user sees them.

One daemon watches a stem inbox and a folder inbox: a `.md5` that does not match, a card missing
a file its list names, a card with one altered byte under an ASC MHL history made by the reference
tool, and a good card, are dropped together. The bad ones land in the quarantine with their reason
(and `chute status` says it); the good one is published with an ASC MHL history the reference tool
accepts. A daemon killed while it verifies a card loses nothing and verifies it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.test_packages import card, folder_setup
from tests.harness import (
    Daemon,
    claimed_inputs,
    drop,
    files,
    ledger_states,
    processes_with,
    status_json,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

ASCMHL = Path(sys.executable).with_name("ascmhl")
ASCMHL_DEBUG = Path(sys.executable).with_name("ascmhl-debug")
CLIPS = {"CLIPS/A001C001.mov": b"a" * 300_000, "CLIPS/A001C002.mov": b"b" * 200_000, "A001.xml": b"<clip/>\n"}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def history(root: Path) -> None:
    """An ASC MHL history of `root`, made as a DIT's tool makes it: the reference CLI."""
    subprocess.run([str(ASCMHL), "create", str(root), "-h", "xxh128"], check=True, capture_output=True)


def report(quarantine: Path, name: str) -> dict:
    return json.loads((quarantine / name / "report.json").read_text())


def test_bad_deliveries_are_quarantined_with_their_reason_and_a_good_card_gets_a_true_mhl(tmp_path):
    setup, cards = folder_setup(tmp_path, name="cards", verify="required", mhl=True)
    stems = setup.inbox("stems", unit="stem", sidecar_wait=0.5)
    config = setup.write()
    cards_in, stems_in = Path(cards["path"]), Path(stems["path"])
    cards_q, cards_out = Path(cards["quarantine"]), Path(cards["outbox"])
    for folder in (cards_in, stems_in):
        folder.mkdir()
    staged = tmp_path / "staged"  # built aside, then moved in whole: a settled delivery
    good = card(staged / "GOOD", CLIPS)
    history(good)
    altered = card(staged / "ALTERED", CLIPS)
    history(altered)
    (altered / "CLIPS" / "A001C002.mov").write_bytes(b"b" * 100_000 + b"B" + b"b" * 99_999)
    short = card(staged / "SHORT", {k: v for k, v in CLIPS.items() if k != "CLIPS/A001C002.mov"})
    (short / "MD5SUMS").write_text("".join(f"{md5(v)}  {k}\n" for k, v in CLIPS.items()))
    with Daemon(config) as d:
        for name in ("GOOD", "ALTERED", "SHORT"):
            (staged / name).rename(cards_in / name)
        drop(stems_in, "clip.mov.md5", f"{md5(b'the video as sent')}  clip.mov\n".encode())
        drop(stems_in, "clip.mov", b"the video as it arrived")
        wait_until(lambda: files(cards_out) == ["GOOD"] and files(cards_q) == ["ALTERED", "SHORT"], 60)
        wait_until(lambda: files(Path(stems["quarantine"])) == ["clip"], 30)
        assert d.stop() == 0
    expected = hashlib.md5(b"the video as sent").hexdigest()
    actual = hashlib.md5(b"the video as it arrived").hexdigest()
    stem_reason = f"checksum mismatch: clip.mov md5 expected {expected}, got {actual}"
    assert report(Path(stems["quarantine"]), "clip")["error"]["reason"] == stem_reason
    assert files(Path(stems["quarantine"]) / "clip") == ["clip.mov", "clip.mov.md5", "report.json"]  # whole
    altered_reason = report(cards_q, "ALTERED")["error"]["reason"]
    assert altered_reason.startswith("checksum mismatch: CLIPS/A001C002.mov xxh128 expected "), altered_reason
    assert report(cards_q, "SHORT")["error"]["reason"] == "incomplete: CLIPS/A001C002.mov listed in MD5SUMS is missing"
    assert files(cards_q / "ALTERED" / "ALTERED" / "CLIPS") == ["A001C001.mov", "A001C002.mov"]  # never touched
    altered_report = report(cards_q, "ALTERED")  # the card as it was read: every file, its size and hashes
    assert altered_report["input"]["size"] == sum(i["size"] for i in altered_report["inputs"])
    assert {i["name"] for i in altered_report["inputs"]} >= set(CLIPS)
    reasons = {r["input_name"]: r["error"]["reason"] for r in status_json(config)["recent"] if r["state"] == "failed"}
    assert reasons == {
        "ALTERED": altered_reason,
        "SHORT": report(cards_q, "SHORT")["error"]["reason"],
        "clip.mov": stem_reason,
    }

    result = cards_out / "GOOD"
    manifest = json.loads((result / "manifest.json").read_text())
    inputs = {i["name"]: i for i in manifest["inputs"]}
    assert inputs["CLIPS/A001C001.mov"]["verified_by"] == ["ascmhl"]
    assert inputs["CLIPS/A001C001.mov"]["size"] == len(CLIPS["CLIPS/A001C001.mov"])
    assert set(inputs) == set(CLIPS) | {n for n in inputs if n.startswith("ascmhl/")}
    check = subprocess.run([str(ASCMHL_DEBUG), "verify", str(result)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    (result / "listing.json").write_text((result / "listing.json").read_text() + " ")
    check = subprocess.run([str(ASCMHL_DEBUG), "verify", str(result)], capture_output=True, text=True)
    assert check.returncode != 0 and "listing.json" in check.stdout + check.stderr
    assert files(Path(cards["archive"])) == ["GOOD"] and claimed_inputs(cards_in) == []


def test_a_daemon_killed_while_it_verifies_a_card_loses_nothing_and_verifies_it_again(tmp_path):
    setup, cards = folder_setup(tmp_path, name="cards", verify="required")
    config = setup.write()
    cards_in, outbox = Path(cards["path"]), Path(cards["outbox"])
    cards_in.mkdir()
    big = {f"CLIPS/A001C00{i}.mov": bytes([i]) * (48 << 20) for i in range(4)}  # 192 MiB: a while to verify
    staged = card(tmp_path / "staged" / "CARD", big)
    (staged / "XXH128SUMS").write_text("".join(f"{xxh128(v)}  {k}\n" for k, v in big.items()))
    staged.rename(cards_in / "CARD")
    d = Daemon(config).start()
    try:
        d.wait_event("run.verifying", file="CARD")
        for pid in processes_with(d.marker):  # frozen where they are: the pool worker in the middle of verifying
            os.kill(pid, signal.SIGSTOP)
        midway = not d.events("run.verified")
        d.kill()  # SIGKILL, and every process it left, as systemd does
    finally:
        d.finish()
    assert midway, "the card was verified before the daemon could be frozen: make it bigger"
    with Daemon(config) as d:
        wait_until(lambda: files(outbox) == ["CARD"], 60)
        assert d.stop() == 0
    assert ledger_states(config).get("failed", 0) == 0 and files(Path(cards["quarantine"])) == []
    manifest = json.loads((outbox / "CARD" / "manifest.json").read_text())
    assert {i["name"]: i["verified_by"] for i in manifest["inputs"]} == {k: ["XXH128SUMS"] for k in big} | {
        "XXH128SUMS": []
    }
    assert files(Path(cards["archive"])) == ["CARD"] and files(cards_in) == [] and claimed_inputs(cards_in) == []


def xxh128(data: bytes) -> str:
    import xxhash

    return xxhash.xxh3_128(data).hexdigest()
