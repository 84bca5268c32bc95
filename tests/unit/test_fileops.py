"""fileops in-process: every move leaves a file in exactly one place, whole, under a name nobody else had."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from chute import fileops


def _file(path: Path, data: bytes = b"the user's bytes", mode: int = 0o640) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_rename_never_replaces_an_existing_file(tmp_path: Path) -> None:
    src, dst = _file(tmp_path / "a", b"new"), _file(tmp_path / "b", b"old")
    with pytest.raises(FileExistsError):
        fileops.rename_noreplace(src, dst)
    assert src.read_bytes() == b"new" and dst.read_bytes() == b"old"


def test_a_move_on_one_filesystem_is_one_rename(tmp_path: Path) -> None:
    src = _file(tmp_path / "clip.mp4")
    inode = src.stat().st_ino
    (tmp_path / "out").mkdir()
    fileops.move_file(src, tmp_path / "out" / "clip.mp4")
    assert not src.exists()
    assert (tmp_path / "out" / "clip.mp4").stat().st_ino == inode


def test_a_move_across_filesystems_copies_syncs_and_then_removes_the_source(tmp_path: Path, tmpfs) -> None:
    other = tmpfs("4m")
    src = _file(tmp_path / "clip.mp4", os.urandom(3 * 1024 * 1024 + 7), 0o604)
    data = src.read_bytes()
    fileops.move_file(src, other / "clip.mp4", tag="run1")
    assert not src.exists()
    assert (other / "clip.mp4").read_bytes() == data
    assert (other / "clip.mp4").stat().st_mode & 0o777 == 0o604
    assert _visible(other) == ["clip.mp4"]  # no hidden partial copy stays


def test_a_symlink_moves_across_filesystems_as_a_link_and_its_target_is_never_read(tmp_path: Path, tmpfs) -> None:
    other = tmpfs("1m")
    link = tmp_path / "link.mp4"
    link.symlink_to("/etc/shadow")
    fileops.move_file(link, other / "link.mp4")
    assert not os.path.lexists(link)
    assert os.readlink(other / "link.mp4") == "/etc/shadow"


def test_a_move_across_filesystems_onto_a_taken_name_keeps_both_files(tmp_path: Path, tmpfs) -> None:
    other = tmpfs("1m")
    src = _file(tmp_path / "clip.mp4", b"mine")
    _file(other / "clip.mp4", b"theirs")
    with pytest.raises(FileExistsError):
        fileops.move_file(src, other / "clip.mp4", tag="run1")
    assert src.read_bytes() == b"mine"
    assert (other / "clip.mp4").read_bytes() == b"theirs"
    assert _visible(other) == ["clip.mp4"]


def test_a_move_that_does_not_fit_leaves_the_source_whole_and_no_partial_copy(tmp_path: Path, tmpfs) -> None:
    other = tmpfs("1m")
    src = _file(tmp_path / "big.bin", os.urandom(2 * 1024 * 1024))
    data = src.read_bytes()
    with pytest.raises(OSError):
        fileops.move_file(src, other / "big.bin", tag="run1")
    assert src.read_bytes() == data
    assert _visible(other) == []


def test_a_folder_moves_across_filesystems_whole_or_not_at_all(tmp_path: Path, tmpfs) -> None:
    other = tmpfs("1m")
    card = tmp_path / "claim" / "CARD"
    (card / "CLIPS").mkdir(parents=True)
    _file(card / "CLIPS" / "A001.mov", b"a" * 1000, 0o600)
    _file(card / "card.md5", b"m")
    fileops.move_file(card, other / "CARD", tag="run1")
    assert not card.exists() and _visible(tmp_path / "claim") == []  # nothing of it left, not even hidden
    assert (other / "CARD" / "CLIPS" / "A001.mov").read_bytes() == b"a" * 1000
    assert (other / "CARD" / "CLIPS" / "A001.mov").stat().st_mode & 0o777 == 0o600
    assert _visible(other) == ["CARD"]
    # One that does not fit leaves the source whole and no partial copy (of files or of folders).
    big = tmp_path / "claim" / "BIG"
    big.mkdir()
    _file(big / "a.bin", os.urandom(600 * 1024))
    _file(big / "b.bin", os.urandom(600 * 1024))
    with pytest.raises(OSError):
        fileops.move_file(big, other / "BIG", tag="run2")
    assert _visible(big) == ["a.bin", "b.bin"] and _visible(other) == ["CARD"]


def test_the_copies_of_an_interrupted_move_are_removed_and_nothing_else(tmp_path: Path) -> None:
    _file(tmp_path / f"{fileops.COPY_PREFIX}run1-clip.mp4", b"partial")
    _file(tmp_path / f"{fileops.COPY_PREFIX}run2-clip.mp4", b"another run's")
    _file(tmp_path / "clip.mp4")
    fileops.remove_copies(tmp_path, "run1")
    assert _visible(tmp_path) == [f"{fileops.COPY_PREFIX}run2-clip.mp4", "clip.mp4"]
    fileops.remove_copies(tmp_path / "gone", "run1")  # a folder that is not there is nothing to clean


def test_placing_never_overwrites_it_takes_the_next_free_name(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _file(out / "clip.mp4", b"first")
    _file(out / "clip-2.mp4", b"second")
    src = _file(tmp_path / "clip.mp4", b"third")
    where = fileops.place(src, out, "clip.mp4", move=True)
    assert where == out / "clip-3.mp4"
    assert [p.read_bytes() for p in sorted(out.iterdir())] == [b"second", b"third", b"first"]
    assert not src.exists()


def test_placing_a_copy_keeps_the_source(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    src = _file(tmp_path / "notes", b"keep me")
    assert fileops.place(src, out, "notes", move=False) == out / "notes"
    assert fileops.place(src, out, "notes", move=False) == out / "notes-2"
    assert src.read_bytes() == b"keep me"


def test_a_free_name_fits_the_filesystem_limit_in_bytes(tmp_path: Path) -> None:
    name = "日" * 83 + "a.mp4"  # 254 bytes: "-2" must shorten the stem, not overflow NAME_MAX
    (tmp_path / name).write_bytes(b"")
    free = fileops.free_name(tmp_path, name)
    assert len(os.fsencode(free.name)) <= fileops.NAME_MAX
    assert free.name.endswith("-2.mp4") and free.name.startswith("日" * 82)
    (tmp_path / ".hidden").write_bytes(b"")
    assert fileops.free_name(tmp_path, ".hidden").name == ".hidden-2"


def test_an_atomic_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = _file(tmp_path / "state.json", b"old")
    fileops.write_atomic(target, b"new")
    fileops.write_atomic(tmp_path / "other.json", b"x", sync=False)
    assert target.read_bytes() == b"new"
    assert _visible(tmp_path) == ["other.json", "state.json"]


def test_an_atomic_write_that_fails_leaves_the_old_file(tmp_path: Path, tmpfs) -> None:
    small = tmpfs("64k")
    target = _file(small / "state.json", b"old")
    with pytest.raises(OSError):
        fileops.write_atomic(target, os.urandom(256 * 1024))
    assert target.read_bytes() == b"old"
    assert _visible(small) == ["state.json"]


def test_link_or_copy_links_on_one_filesystem_and_copies_across(tmp_path: Path, tmpfs) -> None:
    other = tmpfs("1m")
    src = _file(tmp_path / "artifact")
    fileops.link_or_copy(src, tmp_path / "linked")
    fileops.link_or_copy(src, other / "copied")
    assert (tmp_path / "linked").stat().st_ino == src.stat().st_ino
    assert (other / "copied").read_bytes() == src.read_bytes()


def test_a_reflink_where_the_filesystem_cannot_leaves_no_file(tmp_path: Path, tmpfs) -> None:
    other = tmpfs("1m")  # tmpfs has no FICLONE
    src = _file(other / "input")
    assert fileops.reflink(src, other / "clone") is False
    assert _visible(other) == ["input"]


def test_a_private_copy_shares_no_inode_and_a_synced_tree_is_unchanged(tmp_path: Path) -> None:
    src = _file(tmp_path / "input")
    tree = tmp_path / "tree" / "sub"
    tree.mkdir(parents=True)
    fileops.private_copy(src, tree / "copy")
    assert (tree / "copy").stat().st_ino != src.stat().st_ino
    fileops.sync_tree(tmp_path / "tree")
    assert (tree / "copy").read_bytes() == src.read_bytes()
