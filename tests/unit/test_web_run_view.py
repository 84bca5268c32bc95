"""A run's page as read from its folder: the timeline, log tails, checksums, artifacts and loudness figures."""

from __future__ import annotations

import json
from pathlib import Path

from chute.web.run_view import Checksums, checksums, kind_of, read, spans, tail


def manifest(**extra) -> dict:
    entries = [
        {"module": "probe", "status": "succeeded", "duration_s": 0.5, "started_s": 0.1},
        {"module": "proxy", "status": "succeeded", "duration_s": 6.0, "started_s": 0.1},
    ]
    steps = [{"name": "analyse", "entries": entries}]
    steps.append({"name": "sound", "entries": [{"module": "loudness", "status": "failed", "duration_s": 1.0}]})
    return {"run_id": "r1", "input": {"name": "clip.mp4", "size": 10, "sha256": "ab" * 32}, "steps": steps} | extra


def test_the_timeline_puts_entries_at_their_start_and_older_manifests_step_after_step():
    got = [(s.label, s.start, s.length, s.status) for s in spans(manifest())]
    assert got == [
        ("analyse · probe", 0.1, 0.5, "succeeded"),
        ("analyse · proxy", 0.1, 6.0, "succeeded"),
        ("sound · loudness", 6.1, 1.0, "failed"),  # no started_s: after the step before it ended
    ]


def test_checksums_are_the_packages_inputs_when_present_else_the_input():
    assert checksums(manifest()) == [Checksums("clip.mp4", 10, [("sha256", "ab" * 32)], "")]
    inputs = [
        {"name": "a.wav", "size": 1, "hashes": {"xxh128": "11", "md5": "aa"}, "verified_by": ["a.wav.md5"]},
        {"name": "b.wav", "size": 2, "hashes": {"xxh128": "22"}, "verified_by": []},
    ]
    assert checksums(manifest(inputs=inputs)) == [
        Checksums("a.wav", 1, [("md5", "aa"), ("xxh128", "11")], "a.wav.md5"),
        Checksums("b.wav", 2, [("xxh128", "22")], ""),
    ]


def test_artifacts_are_shown_as_what_they_are():
    kinds = [kind_of(n) for n in ("contact_sheet.jpg", "waveform.png", "proxy.mp4", "loudness.json", "probe.json")]
    assert kinds == ["image", "image", "video", "loudness", "file"]


def test_a_log_tail_is_its_last_whole_lines(tmp_path: Path):
    log = tmp_path / "x.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(10000)) + b"\xff the end\n")
    text = tail(log, 100)
    assert text.endswith("\ufffd the end\n") and text.startswith("line ") and len(text) < 100


def test_a_quarantine_folder_gives_its_report_logs_and_figures_but_never_a_links_target(tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    folder = tmp_path / "quarantine" / "clip"
    (folder / "logs").mkdir(parents=True)
    artifacts = [{"name": n, "size": 1, "sha256": "00"} for n in ("loudness.json", "waveform.png", "gone.png")]
    (folder / "report.json").write_text(json.dumps(manifest(artifacts=artifacts, status="failed")))
    (folder / "loudness.json").write_text(json.dumps({"integrated_lufs": -23.1, "true_peak_dbtp": -1.5}))
    (folder / "waveform.png").symlink_to(secret)
    (folder / "logs" / "analyse.probe.log").write_text("probing\nexit 3\n")
    (folder / "logs" / "evil.log").symlink_to(secret)

    view = read(folder)

    assert view.manifest is not None and view.manifest["status"] == "failed"
    assert view.logs == [("analyse.probe.log", "probing\nexit 3\n")]
    assert [a.name for a in view.artifacts] == ["loudness.json"]
    assert view.loudness is not None and (view.loudness.integrated_lufs, view.loudness.true_peak_dbtp) == (-23.1, -1.5)
    assert view.loudness.range_lu is None
    assert '"run_id": "r1"' in view.manifest_text and "password" not in repr(view)


def test_a_run_without_a_folder_shows_nothing_from_one(tmp_path: Path):
    assert read(None).manifest is None and read(tmp_path / "missing").spans == []


def test_a_runs_folder_is_read_only_inside_an_outbox_or_quarantine_of_the_config(tmp_path: Path):
    from types import SimpleNamespace

    from chute.ledger import Run, State
    from chute.web.run_page import folder_of

    outbox, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (outbox / "clip").mkdir(parents=True)
    (elsewhere / "clip").mkdir(parents=True)
    (outbox / "link").symlink_to(elsewhere / "clip")
    config = SimpleNamespace(inboxes=[SimpleNamespace(outbox=outbox, quarantine=tmp_path / "q")])

    def run(result):
        return Run("r", "/in", "job", "clip", 1, "00", State.SUCCEEDED, 1, None, "t", "t", "t", result, None)

    assert folder_of(config, run(str(outbox / "clip"))) == outbox / "clip"
    assert folder_of(config, run(str(elsewhere / "clip"))) is None
    assert folder_of(config, run(str(outbox / "link"))) is None  # a link out of the outbox
    assert folder_of(config, run(str(outbox / "clip" / ".." / ".."))) is None
    assert folder_of(config, run(str(outbox))) is None and folder_of(config, run(None)) is None
