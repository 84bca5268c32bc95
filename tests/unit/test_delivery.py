"""delivery in-process: the fenced delivery puts the input in exactly one place, or nowhere new when it may not."""

from __future__ import annotations

import json
import os
from pathlib import Path

from chute import claims, delivery, publish
from chute.run import Fault, RunStatus

from tests.pipelines import Project

from .conftest import claimed, dropped, ran


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _claims_left(inbox: Path) -> list[Path]:
    root = claims.claimed_root(inbox)
    return [run for owner in root.iterdir() for run in owner.iterdir()] if root.exists() else []


def _deliver(project: Project, job: str, inbox: Path, **overrides):
    spec = claimed(project, job, inbox, **overrides)
    ws, outcome = ran(spec)
    info = publish.describe_input(ws / "clip.txt", "clip.txt", inbox)
    return spec, delivery.deliver(spec, outcome, ws, info, delivery.fence_of(spec), {})


def test_a_success_is_published_and_its_claim_is_gone(project: Project, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    dropped(inbox)
    spec, result = _deliver(project, "one", inbox, on_success="archive", archive=tmp_path / "done")
    assert result.status == RunStatus.SUCCEEDED and result.result_dir == spec.outbox / "clip"
    assert _visible(spec.outbox) == ["clip"] and (spec.outbox / "clip" / "echo.json").exists()
    assert result.archived_to == tmp_path / "done" / "clip.txt" and result.archived_to.exists()
    assert _claims_left(inbox) == [] and _visible(inbox) == []


def test_a_failure_is_quarantined_with_the_input_and_its_report(project: Project, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    dropped(inbox)
    spec, result = _deliver(project, "bad", inbox)
    assert result.status == RunStatus.FAILED and result.result_dir == spec.quarantine / "clip"
    assert (spec.quarantine / "clip" / "clip.txt").read_bytes() == b"a user's text\n"
    assert json.loads((spec.quarantine / "clip" / "report.json").read_text())["status"] == "failed"
    assert _visible(spec.outbox) == [] and _claims_left(inbox) == []


def test_a_lost_claim_delivers_nothing(project: Project, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    dropped(inbox)
    spec = claimed(project, "one", inbox)
    ws, outcome = ran(spec)
    assert spec.claim is not None
    thief = spec.claim.parent.with_name("other-daemon")
    thief.mkdir()
    os.rename(spec.claim, thief / spec.claim.name)  # another daemon took the claim over
    result = delivery.deliver(spec, outcome, ws, {}, delivery.fence_of(spec), {})
    assert result.status == RunStatus.LOST
    assert list(spec.outbox.iterdir()) == [] and list(spec.quarantine.iterdir()) == []
    assert (thief / spec.claim.name / "clip.txt").exists()  # the input is where the new owner has it


def test_an_outbox_that_is_gone_defers_the_run_with_the_claim_kept(project: Project, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    dropped(inbox)
    spec, result = _deliver(project, "one", inbox, outbox=tmp_path / "unmounted", make_roots=False)
    assert result.status == RunStatus.DEFERRED and result.fault == Fault.OUTAGE
    assert not (tmp_path / "unmounted").exists()
    assert spec.claim is not None and (spec.claim / "clip.txt").exists()  # uncommitted, to be delivered again
    assert not spec.quarantine.exists()  # nor was anything quarantined


def test_a_symlink_is_quarantined_without_a_run_and_its_target_never_read(project: Project, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "clip.txt").symlink_to("/etc/shadow")
    spec = claimed(project, "one", inbox)
    result = delivery.quarantine_without_run(spec, "a symbolic link", delivery.fence_of(spec))
    assert result.status == RunStatus.FAILED
    assert os.readlink(spec.quarantine / "clip" / "clip.txt") == "/etc/shadow"
    report = json.loads((spec.quarantine / "clip" / "report.json").read_text())
    assert report["error"]["reason"] == "a symbolic link" and report["input"]["sha256"] is None


def test_a_crash_while_revealing_is_finished_without_running_the_file_again(project: Project, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    dropped(inbox)
    spec = claimed(project, "one", inbox, on_success="archive", archive=tmp_path / "done")
    ws, outcome = ran(spec)
    fence = delivery.fence_of(spec)
    fence.commit()
    publish.build_result(spec, outcome, ws, publish.describe_input(ws / "clip.txt", "clip.txt", inbox))
    fence.mark(publish.REVEALING)  # ... and the daemon died here
    result = delivery.finish(spec, delivery.fence_of(spec))
    assert result is not None and result.status == RunStatus.SUCCEEDED
    assert _visible(spec.outbox) == ["clip"] and (spec.outbox / "clip" / "manifest.json").exists()
    assert _visible(tmp_path / "done") == ["clip.txt"] and _claims_left(inbox) == []


def test_a_crash_while_quarantining_is_finished_with_the_input_in_one_place(project: Project, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    dropped(inbox)
    spec = claimed(project, "bad", inbox)
    ws, outcome = ran(spec)
    fence = delivery.fence_of(spec)
    fence.commit()
    publish.build_report(spec, outcome, ws / ".logs", {"name": "clip.txt"})
    fence.mark(publish.QUARANTINING)  # ... and the daemon died before the input moved
    result = delivery.finish(spec, delivery.fence_of(spec))
    assert result is not None and result.status == RunStatus.FAILED
    assert (spec.quarantine / "clip" / "clip.txt").read_bytes() == b"a user's text\n"
    assert _claims_left(inbox) == [] and _visible(inbox) == []


def test_a_commit_with_nothing_going_out_is_taken_back_to_run_again(project: Project, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    dropped(inbox)
    spec = claimed(project, "one", inbox)
    ws, outcome = ran(spec)
    fence = delivery.fence_of(spec)
    fence.commit()
    publish.build_result(spec, outcome, ws, {})  # built, but no marker: it never started going out
    assert delivery.finish(spec, delivery.fence_of(spec)) is None
    assert spec.claim is not None and (spec.claim / "clip.txt").exists()
    assert list(spec.outbox.iterdir()) == []  # the hidden build is dropped: the next run may end otherwise


def test_a_submitted_file_is_never_moved(project: Project, tmp_path: Path) -> None:
    spec = project.spec("bad", dropped(tmp_path / "mine"))
    ws, outcome = ran(spec)
    result = delivery.deliver(spec, outcome, ws, {"name": "clip.txt"}, delivery.fence_of(spec), {})
    assert result.status == RunStatus.FAILED
    assert spec.input_path.read_bytes() == (spec.quarantine / "clip" / "clip.txt").read_bytes()
