"""package.of: the run side's view of a claimed delivery (contract §12), read from real claim folders."""

from __future__ import annotations

import os
from pathlib import Path

from chute import package

from tests.pipelines import Project

from .conftest import claimed, dropped


def test_a_file_delivery_is_its_one_file(project: Project, tmp_path: Path) -> None:
    dropped(tmp_path / "inbox")
    spec = claimed(project, "one", tmp_path / "inbox")
    got = package.of(spec)
    assert got == package.Package("file", spec.claim, "clip.txt", ("clip.txt",))


def test_a_stem_delivery_lists_its_members_and_never_its_markers(project: Project, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    dropped(inbox)
    spec = claimed(project, "one", inbox, unit="stem")
    assert spec.claim is not None
    for name in ("clip.srt", "clip.txt.md5", ".delivery", ".running"):
        (spec.claim / name).write_text("x")
    got = package.of(spec)
    assert (got.unit, got.root, got.main) == ("stem", spec.claim, "clip.txt")
    assert got.files == ("clip.srt", "clip.txt", "clip.txt.md5")


def test_a_folder_delivery_is_every_regular_file_beneath_it_and_no_symlink(project: Project, tmp_path: Path) -> None:
    card = tmp_path / "claim" / "CARD_A"
    (card / "CLIPS" / "deep").mkdir(parents=True)
    for rel in ("CLIPS/A001.mov", "CLIPS/deep/A002.mov", "card.md5", ".hidden"):
        (card / rel).write_text("x")
    os.symlink("/etc/passwd", card / "CLIPS" / "escape")
    os.symlink(card / "CLIPS", card / "loop")
    spec = project.spec("one", card, unit="folder")
    got = package.of(spec)
    assert (got.unit, got.root, got.main) == ("folder", card, None)
    # Below the top of a folder a dot name is the user's file like any other.
    assert got.files == (".hidden", "CLIPS/A001.mov", "CLIPS/deep/A002.mov", "card.md5")
    assert package.links(card) == ["CLIPS/escape", "loop"]
