"""Jobs over packages through a real daemon (contract §12): sidecars bound by `match`, optional ones, a card's clips.

One daemon watches several inboxes at once, one per case, so the cases share its start-up.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import yaml

from tests.harness import Daemon, Setup, copy_entry, drop, each_copy_job, files, wait_until
from tests.media import make_clip

REPO = Path(__file__).resolve().parents[2]
ASCMHL = Path(sys.executable).with_name("ascmhl")
ASCMHL_DEBUG = Path(sys.executable).with_name("ascmhl-debug")


def sidecar_job(name: str, optional: bool) -> dict:
    """The main file and its subtitles (`*.srt`), each copied into the result."""
    return {
        "name": name,
        "version": 1,
        "input_artifacts": [
            {"param_name": "input", "type": "blob", "name": "source.bin"},
            {"param_name": "subs", "type": "blob", "name": "subs.srt", "match": "*.srt", "optional": optional},
        ],
        "steps": [
            {
                "name": "first",
                "entries": [copy_entry("source.bin", "main.bin"), copy_entry("subs.srt", "subs_copy.srt")],
            }
        ],
    }


def deliver_folder(inbox: Path, name: str, files_: dict[str, bytes | Path], mhl: bool = False) -> None:
    """A folder made aside (with an ASC MHL history, as a DIT's offload has), then renamed into the inbox whole."""
    aside = inbox.parent / f".{name}.making"
    for rel, data in files_.items():
        (aside / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Path):
            shutil.copyfile(data, aside / rel)
        else:
            (aside / rel).write_bytes(data)
    if mhl:
        subprocess.run([str(ASCMHL), "create", str(aside), "-h", "xxh128"], check=True, capture_output=True)
    os.rename(aside, inbox / name)


def result_of(outbox: Path) -> Path:
    return wait_until(lambda: next((p for p in outbox.iterdir() if not p.name.startswith(".")), None), 60)


def test_a_required_sidecar_missing_quarantines_and_an_optional_one_skips_its_entry(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    for name, optional in (("needs_subs", False), ("maybe_subs", True)):
        (setup.defs / "jobs" / f"{name}.yaml").write_text(yaml.safe_dump(sidecar_job(name, optional), sort_keys=False))
    needs = setup.inbox("needs", job="needs_subs")
    maybe = setup.inbox("maybe", job="maybe_subs")
    config = setup.write()
    with Daemon(config) as d:
        drop(Path(needs["path"]), "clip.bin", b"main\n")
        drop(Path(maybe["path"]), "clip.bin", b"main\n")
        d.wait_event("run.quarantined", inbox=needs["path"])
        d.wait_event("run.published", inbox=maybe["path"])
        # The missing sidecar is named, with its pattern, before any module ran.
        report_dir = result_of(Path(needs["quarantine"]))
        report = json.loads((report_dir / "report.json").read_text())
        assert report["error"]["reason"] == "missing input: no file matches '*.srt' (input 'subs.srt')"
        assert report["steps"] == []
        assert (report_dir / "clip.bin").read_bytes() == b"main\n"
        # The optional one: the entry needing it is left out, said so in the manifest; the rest is published.
        result = result_of(Path(maybe["outbox"]))
        manifest = json.loads((result / "manifest.json").read_text())
        assert files(result) == ["main.bin", "manifest.json"]
        assert manifest["skipped"] == [{"step": "first", "module": "copy", "reason": "its input 'subs.srt' is absent"}]
        assert [e["status"] for e in manifest["steps"][0]["entries"]] == ["succeeded"]
        assert d.stop() == 0


def test_a_stems_sidecar_reaches_its_module_and_a_card_runs_per_clip(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    setup.config["modules_path"].append(str(REPO / "modules"))
    setup.config["jobs_path"].append(str(REPO / "jobs"))
    (setup.defs / "jobs" / "needs_subs.yaml").write_text(yaml.safe_dump(sidecar_job("needs_subs", False)))
    (setup.defs / "jobs" / "each_copy.yaml").write_text(yaml.safe_dump(each_copy_job(), sort_keys=False))
    stem = setup.inbox("stem", job="needs_subs", unit="stem", sidecar_wait=0.5)
    cards = setup.inbox("cards", job="card_ingest", unit="folder", verify="required", mhl=True)
    bad = setup.inbox("bad", job="each_copy", unit="folder")
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a.mov", "b.mp4", "c.mov"):
        make_clip(clips / name, seconds=1, width=160, height=90)
    config = setup.write()
    with Daemon(config) as d:
        Path(stem["path"]).mkdir(parents=True, exist_ok=True)
        drop(Path(stem["path"]), "clip.srt", b"1\n00:00:00,000 --> 00:00:01,000\nhello\n")
        drop(Path(stem["path"]), "clip.bin", b"main\n")
        card = {"A001.mov": clips / "a.mov", "CLIPS/A002.mp4": clips / "b.mp4", "A003.MOV": clips / "c.mov"}
        deliver_folder(Path(cards["path"]), "CARD_01", card | {"notes.txt": b"shot on a sunny day\n"}, mhl=True)
        deliver_folder(Path(bad["path"]), "BATCH", {"a.bin": b"fine\n", "b.bin": b"fail\n"})
        d.wait_event("run.published", inbox=stem["path"])
        d.wait_event("run.quarantined", inbox=bad["path"])
        d.wait_event("run.published", inbox=cards["path"], timeout=120)

        # The stem's .srt, bound by `match`, reached its module; it went to the archive with its main file,
        # its write bits given back after the run held it read-only.
        result = result_of(Path(stem["outbox"]))
        assert (result / "subs_copy.srt").read_text().endswith("hello\n")
        assert files(Path(stem["archive"])) == ["clip.bin", "clip.srt"]
        assert os.stat(Path(stem["archive"]) / "clip.srt").st_mode & stat.S_IWUSR

        # The card: every clip's products in a folder of its own, named by its path on the card.
        result = result_of(Path(cards["outbox"]))
        products = ["contact_sheet.jpg", "loudness.json", "probe.json", "proxy.mp4", "waveform.png"]
        for clip in card:
            assert files(result / clip) == products, clip
        manifest = json.loads((result / "manifest.json").read_text())
        made = {(a["file"], a["name"]) for a in manifest["artifacts"]}
        assert made == {(clip, p) for clip in card for p in products}
        assert all(a["path"] == f"{a['file']}/{a['name']}" for a in manifest["artifacts"])
        for clip, source in card.items():  # each clip's probe is of that clip
            probe = json.loads((result / clip / "probe.json").read_text())
            assert probe["container"]["size"] == source.stat().st_size, clip
        entries = [e for step in manifest["steps"] for e in step["entries"]]
        assert sorted({e["file"] for e in entries}) == sorted(card)
        assert len(entries) == 6 * len(card) and {e["status"] for e in entries} == {"succeeded"}
        # Verified before it ran (its ASC MHL history), and the result's own MHL covers the per-clip folders.
        inputs = {i["name"]: i["verified_by"] for i in manifest["inputs"]}
        assert all(inputs[clip] == ["ascmhl"] for clip in card)
        check = subprocess.run([str(ASCMHL_DEBUG), "verify", str(result)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr

        # One file of a folder failing fails the run; the report names it, each file has its own log.
        report_dir = result_of(Path(bad["quarantine"]))
        error = json.loads((report_dir / "report.json").read_text())["error"]
        assert error["file"] == "b.bin" and error["reason"].startswith("b.bin: exited with status 3")
        assert "first.0.copy.b.bin.log" in files(report_dir / "logs")
        assert [e["member"] for e in d.events("entry.failed", inbox=bad["path"])] == ["b.bin"]
        assert d.stop() == 0
