"""Jobs bound to deliveries (contract §12): `match` sidecars found, optional ones absent, `for_each` expanded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from chute import bind, globs, manifest
from chute.job import load_job
from chute.package import Package
from chute.plan import JobPlan
from chute.run import EntryRecord, EntryStatus

MODULES = Path(__file__).resolve().parent / "definitions" / "_base" / "modules"

STEM_JOB = """
name: stem_job
version: "1"
input_artifacts:
  - {param_name: input, type: video, name: video.mp4}
  - {param_name: subs, type: audio, name: subs.wav, match: "*.wav"}
  - {param_name: extra, type: video, name: extra.mxf, match: "*.mxf", optional: true}
steps:
  - name: s1
    entries:
      - module: tiny
        input_artifacts: [{name: video.mp4, param_name: input, type: video}]
        output_artifacts: [{name: audio.wav, param_name: output, type: audio, public: true}]
      - module: tiny
        input_artifacts: [{name: extra.mxf, param_name: input, type: video}]
        output_artifacts: [{name: extra.wav, param_name: output, type: audio}]
  - name: s2
    entries:
      - module: meter
        input_artifacts: [{name: extra.wav, param_name: audio, type: audio}]
        output_artifacts: [{name: twice.json, param_name: report, type: json, public: true}]
      - module: meter
        input_artifacts: [{name: subs.wav, param_name: audio, type: audio}]
        output_artifacts: [{name: subs.json, param_name: report, type: json, public: true}]
"""

CARD_JOB = """
name: card_job
version: "1"
input_artifacts:
  - {param_name: card, type: folder, name: card}
steps:
  - name: s1
    entries:
      - module: tiny
        for_each: ["*.MOV", "*.mp4"]
        input_artifacts: [{name: card, param_name: input, type: video}]
        output_artifacts: [{name: audio.wav, param_name: output, type: audio}]
  - name: s2
    entries:
      - module: meter
        for_each: ["*.MOV", "*.mp4"]
        input_artifacts: [{name: audio.wav, param_name: audio, type: audio}]
        output_artifacts: [{name: report.json, param_name: report, type: json, public: true}]
"""


def _plan(tmp_path: Path, text: str) -> JobPlan:
    modules, problems, _ = manifest.discover([MODULES])
    assert not problems
    file = tmp_path / "job.yaml"
    file.write_text(text)
    return load_job(file, modules)


def test_globs_match_names_anywhere_paths_from_the_top_case_insensitively() -> None:
    files = ["A001.MOV", "CLIPS/b002.mov", "CLIPS/.hidden.mov", ".meta/c.mov", "notes.txt"]
    assert globs.select(("*.mov",), files) == ["A001.MOV", "CLIPS/b002.mov"]
    assert globs.select(("clips/*.mov",), files) == ["CLIPS/b002.mov"]
    assert globs.select(("*.mxf",), files) == []
    assert globs.problem("*.{mov,mp4}") is not None and globs.problem("[ab]*.mov") is None


def test_a_match_binds_the_one_matching_sidecar(tmp_path: Path) -> None:
    plan = _plan(tmp_path, STEM_JOB)
    delivery = Package("stem", tmp_path, "clip.mov", ("clip.MXF", "clip.mov", "clip.wav"))
    bound = bind.bind(plan, delivery)
    assert dict(bound.sidecars) == {"subs.wav": "clip.wav", "extra.mxf": "clip.MXF"}
    assert bound.plan.skipped == ()


def test_a_missing_or_ambiguous_match_is_the_deliverys_fault(tmp_path: Path) -> None:
    plan = _plan(tmp_path, STEM_JOB)
    with pytest.raises(bind.Unbound, match=r"missing input: no file matches '\*\.wav' \(input 'subs.wav'\)"):
        bind.bind(plan, Package("stem", tmp_path, "clip.mov", ("clip.mov", "clip.srt")))
    with pytest.raises(bind.Unbound, match=r"ambiguous input: 2 files match '\*\.wav' \(a.wav, b.wav\)"):
        bind.bind(plan, Package("stem", tmp_path, "clip.mov", ("a.wav", "b.wav", "clip.mov")))


def test_an_absent_optional_input_skips_what_needs_it_and_what_needs_that(tmp_path: Path) -> None:
    plan = _plan(tmp_path, STEM_JOB)
    bound = bind.bind(plan, Package("stem", tmp_path, "clip.mov", ("clip.mov", "clip.wav")))
    ran = [(e.step, e.module, e.inputs[0].artifact) for e in bound.plan.entries()]
    assert ran == [("s1", "tiny", "video.mp4"), ("s2", "meter", "subs.wav")]
    assert [(s.step, s.reason) for s in bound.plan.skipped] == [
        ("s1", "its input 'extra.mxf' is absent"),
        ("s2", "its input 'extra.wav' is absent"),
    ]
    public = [a.name for a in bound.plan.public]
    assert public == ["audio.wav", "subs.json"]  # twice.json was never made: not published, not missed


def test_for_each_runs_once_per_matching_file_with_its_outputs_kept_apart(tmp_path: Path) -> None:
    plan = _plan(tmp_path, CARD_JOB)
    files = ("A001.mov", "CLIPS/B002.MP4", "notes.txt", "sound.wav")
    bound = bind.bind(plan, Package("folder", tmp_path, None, files))
    first, second = bound.plan.steps
    assert [(e.file, e.inputs[0].artifact, e.outputs[0].artifact) for e in first.entries] == [
        ("A001.mov", "card/A001.mov", ".each/A001.mov/audio.wav"),
        ("CLIPS/B002.MP4", "card/CLIPS/B002.MP4", ".each/CLIPS/B002.MP4/audio.wav"),
    ]
    assert [e.inputs[0].artifact for e in second.entries] == [
        ".each/A001.mov/audio.wav",
        ".each/CLIPS/B002.MP4/audio.wav",
    ]
    assert len({e.slot for e in first.entries}) == 2 and len({e.label for e in first.entries}) == 1
    assert [(a.result_path, a.file) for a in bound.plan.public] == [
        ("A001.mov/report.json", "A001.mov"),
        ("CLIPS/B002.MP4/report.json", "CLIPS/B002.MP4"),
    ]
    with pytest.raises(bind.Unbound, match=r"no file matches for_each '\*\.MOV', '\*\.mp4'"):
        bind.bind(plan, Package("folder", tmp_path, None, ("notes.txt",)))


def test_a_sidecar_is_staged_without_a_writable_link_to_the_users_file(tmp_path: Path) -> None:
    plan = _plan(tmp_path, STEM_JOB)
    claim, ws = tmp_path / "claim", tmp_path / "ws"
    claim.mkdir()
    ws.mkdir()
    (claim / "clip.wav").write_bytes(b"RIFF....")
    bound = bind.bind(plan, Package("stem", claim, "clip.mov", ("clip.mov", "clip.wav")))
    bind.stage(bound, ws, claim, None)  # no claim (chute submit): never linked
    staged = ws / "subs.wav"
    assert staged.read_bytes() == b"RIFF...."
    assert os.stat(staged).st_ino != os.stat(claim / "clip.wav").st_ino  # a module writing it cannot reach the user's


def test_a_steps_for_each_instances_start_only_so_many_at_once(tmp_path: Path) -> None:
    plan = _plan(tmp_path, CARD_JOB)
    files = tuple(f"C{i:03}.mov" for i in range(6))
    bound = bind.bind(plan, Package("folder", tmp_path, None, files))
    records = [EntryRecord(e) for e in bound.plan.steps[0].entries]
    assert bind.to_start(records, [], at_once=4) == [0, 1, 2, 3]
    for i in (0, 1, 2, 3):
        records[i].status = EntryStatus.RUNNING
    assert bind.to_start(records, [0, 1, 2, 3], at_once=4) == []
    records[1].status = EntryStatus.SUCCEEDED
    assert bind.to_start(records, [0, 2, 3], at_once=4) == [4]


def test_a_for_each_instances_log_name_stays_short_and_unique_for_long_file_names(tmp_path: Path) -> None:
    plan = _plan(tmp_path, CARD_JOB)
    long_names = ("CLIPS/" + "x" * 240 + "1.mov", "CLIPS/" + "x" * 240 + "2.mov")
    bound = bind.bind(plan, Package("folder", tmp_path, None, long_names))
    slots = [e.slot for e in bound.plan.steps[0].entries]
    assert len(set(slots)) == 2 and all(len(os.fsencode(s + ".log")) < 255 for s in slots)


def test_a_folders_sidecar_is_linked_from_its_read_only_staged_tree(tmp_path: Path) -> None:
    job = CARD_JOB.replace(
        "  - {param_name: card, type: folder, name: card}\n",
        "  - {param_name: card, type: folder, name: card}\n"
        '  - {param_name: xml, type: text, name: card.xml, match: "*.xml"}\n',
    )
    plan = _plan(tmp_path, job)
    ws = tmp_path / "ws"
    (ws / "card" / "META").mkdir(parents=True)
    staged = ws / "card" / "META" / "A001.xml"
    staged.write_text("<card/>")
    staged.chmod(0o444)  # as units' staging leaves a linked tree
    bound = bind.bind(plan, Package("folder", tmp_path / "claimed", None, ("A001.mov", "META/A001.xml")))
    bind.stage(bound, ws, tmp_path / "claimed", tmp_path)
    assert (ws / "card.xml").read_text() == "<card/>"
    assert os.stat(ws / "card.xml").st_ino == os.stat(staged).st_ino or os.geteuid() == 0
    assert (ws / ".each" / "A001.mov").is_dir()  # where the clip's outputs go
