"""publish in-process: result and report folders appear whole under a new name, never over another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chute import publish

from tests.pipelines import Project

from .conftest import dropped, ran


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_result_folder_is_built_aside_and_appears_whole_with_its_manifest(project: Project, tmp_path: Path) -> None:
    spec = project.spec("one", dropped(tmp_path / "in"))
    ws, outcome = ran(spec)
    info = publish.describe_input(ws / "clip.txt", "clip.txt", None)
    build = publish.build_result(spec, outcome, ws, info)
    assert _visible(spec.outbox) == []  # nobody sees it while it is assembled
    final = publish.reveal(build, "clip.txt")
    assert final == spec.outbox / "clip" and _hidden(spec.outbox) == []
    assert json.loads((final / "echo.json").read_text()) == {"ok": True}
    doc = json.loads((final / "manifest.json").read_text())
    assert doc["status"] == "succeeded" and doc["run_id"] == spec.run_id
    assert doc["input"]["sha256"] == publish.sha256_of(spec.input_path)
    assert [a["name"] for a in doc["artifacts"]] == ["echo.json"]


def test_a_second_result_of_the_same_name_is_clip_2_and_the_first_is_untouched(
    project: Project, tmp_path: Path
) -> None:
    first = project.spec("one", dropped(tmp_path / "in"))
    second = project.spec("one", dropped(tmp_path / "in2"))
    folders = []
    for spec in (first, second):
        ws, outcome = ran(spec)
        info = publish.describe_input(ws / "clip.txt", "clip.txt", None)
        folders.append(publish.reveal(publish.build_result(spec, outcome, ws, info), "clip.txt"))
    assert [f.name for f in folders] == ["clip", "clip-2"]
    assert json.loads((folders[0] / "manifest.json").read_text())["run_id"] == first.run_id


def test_a_report_folder_holds_the_report_the_logs_and_the_input(project: Project, tmp_path: Path) -> None:
    spec = project.spec("bad", dropped(tmp_path / "in"))
    ws, outcome = ran(spec)
    info = publish.describe_input(ws / "clip.txt", "clip.txt", None)
    build = publish.build_report(spec, outcome, ws / ".logs", info)
    publish.add_input(build, spec.input_path, "clip.txt", move=True, tag=spec.run_id)
    final = publish.reveal(build, "clip.txt")
    assert not spec.input_path.exists()  # the input is in exactly one place: its quarantine folder
    assert (final / "clip.txt").read_bytes() == b"a user's text\n"
    report = json.loads((final / "report.json").read_text())
    assert report["status"] == "failed" and report["artifacts"] == []
    assert any("it went wrong" in log.read_text() for log in (final / "logs").iterdir())


def test_a_submitted_file_is_copied_into_its_report_and_stays_where_it_was(project: Project, tmp_path: Path) -> None:
    spec = project.spec("bad", dropped(tmp_path / "in"))
    ws, outcome = ran(spec)
    build = publish.build_report(spec, outcome, None, {"name": "clip.txt"})
    publish.add_input(build, spec.input_path, "clip.txt", move=False, tag=spec.run_id)
    final = publish.reveal(build, "clip.txt")
    assert spec.input_path.read_bytes() == (final / "clip.txt").read_bytes()
    assert not (final / "logs").exists()


def test_a_missing_outbox_is_never_created_it_is_an_unmounted_share(project: Project, tmp_path: Path) -> None:
    spec = project.spec("one", dropped(tmp_path / "in"), outbox=tmp_path / "share" / "out", make_roots=False)
    ws, outcome = ran(spec)
    with pytest.raises(FileNotFoundError):
        publish.build_result(spec, outcome, ws, {})
    assert not (tmp_path / "share").exists()


def test_a_build_that_fails_leaves_no_hidden_folder(project: Project, tmp_path: Path) -> None:
    spec = project.spec("one", dropped(tmp_path / "in"))
    ws, outcome = ran(spec)
    (ws / "echo.json").unlink()  # its artifact is gone: the build stops half way
    with pytest.raises(FileNotFoundError):
        publish.build_result(spec, outcome, ws, {})
    assert list(spec.outbox.iterdir()) == []


def test_an_input_named_like_a_hidden_file_gets_a_visible_result_name() -> None:
    assert publish.result_name(".clip") == "result"
    assert publish.result_name("my clip.final.mp4") == "my clip.final"


@pytest.mark.parametrize("on_success", ["keep", "delete", "archive"])
def test_after_a_success_the_input_is_kept_deleted_or_archived(
    project: Project, tmp_path: Path, on_success: str
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "clip.txt").write_bytes(b"an earlier file")
    spec = project.spec("one", dropped(tmp_path / "in"), on_success=on_success, archive=archive)
    where = publish.dispose_input(spec.input_path, spec, tmp_path / "note")
    if on_success == "keep":
        assert where is None and spec.input_path.exists()
    elif on_success == "delete":
        assert where is None and not spec.input_path.exists()
    else:
        assert where == archive / "clip-2.txt" and not spec.input_path.exists()
        assert (archive / "clip.txt").read_bytes() == b"an earlier file"


def test_an_archive_across_filesystems_after_a_crash_is_not_archived_twice(
    project: Project, tmp_path: Path, tmpfs
) -> None:
    archive = tmpfs("1m")
    spec = project.spec("one", dropped(tmp_path / "in"), on_success="archive", archive=archive)
    note = tmp_path / "note"
    # A crash after the copy was renamed in and before the unlink: the note says where it went.
    (archive / "clip.txt").write_bytes(spec.input_path.read_bytes())
    note.write_bytes(bytes(archive / "clip.txt"))
    assert publish.dispose_input(spec.input_path, spec, note) == archive / "clip.txt"
    assert not spec.input_path.exists() and _visible(archive) == ["clip.txt"]
    # And a first archive across filesystems writes the note before it moves.
    spec2 = project.spec("one", dropped(tmp_path / "in2"), on_success="archive", archive=archive)
    assert publish.dispose_input(spec2.input_path, spec2, tmp_path / "note2") == archive / "clip-2.txt"
    assert (tmp_path / "note2").read_bytes() == bytes(archive / "clip-2.txt")
