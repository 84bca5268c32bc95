"""Jobs over packages through a real daemon (contract §12): sidecars bound by `match`, optional ones, a card's clips.

One daemon watches several inboxes at once, one per case, so the cases share its start-up.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.harness import Daemon, Setup, drop, files, wait_until


def _copy(src: str, dst: str, public: bool = True) -> dict:
    return {
        "module": "copy",
        "input_artifacts": [{"name": src, "param_name": "input", "type": "blob"}],
        "output_artifacts": [{"name": dst, "param_name": "output", "type": "blob", "public": public}],
    }


def sidecar_job(name: str, optional: bool) -> dict:
    """The main file and its subtitles (`*.srt`), each copied into the result."""
    return {
        "name": name,
        "version": 1,
        "input_artifacts": [
            {"param_name": "input", "type": "blob", "name": "source.bin"},
            {"param_name": "subs", "type": "blob", "name": "subs.srt", "match": "*.srt", "optional": optional},
        ],
        "steps": [{"name": "first", "entries": [_copy("source.bin", "main.bin"), _copy("subs.srt", "subs_copy.srt")]}],
    }


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
