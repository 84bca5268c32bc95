"""staging in-process: a workspace holds the input under its names, and no module can spoil the user's file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from chute import claims, staging
from chute.leases import Identity

from tests.pipelines import Project

from .conftest import dropped


def test_a_workspace_holds_the_input_and_its_own_tmp_and_logs(project: Project, tmp_path: Path) -> None:
    spec = project.spec("one", dropped(tmp_path / "in"))
    ws = staging.prepare(spec, spec.input_path, None)
    assert ws.parent == spec.owner_dir and ws.name.startswith(spec.run_id)
    assert sorted(p.name for p in ws.iterdir()) == [".logs", ".tmp", "clip.txt"]
    (ws / "clip.txt").write_bytes(b"a module wrote here")  # a private copy or clone: the user's file is untouched
    assert spec.input_path.read_bytes() == b"a user's text\n"
    assert staging.prepare(spec, spec.input_path, None) != ws  # every attempt has its own


def test_staging_clones_or_copies_and_never_shares_the_users_inode(tmp_path: Path, tmpfs) -> None:
    source = dropped(tmp_path / "in")
    how = staging.stage(source, tmp_path / "staged", None)
    assert how in ("reflink", "copy")  # no claim folder: never a link to the user's file
    assert (tmp_path / "staged").stat().st_ino != source.stat().st_ino
    other = tmpfs("1m")
    assert staging.stage(source, other / "staged", tmp_path) == "copy"  # another filesystem: a copy
    assert (other / "staged").read_bytes() == source.read_bytes()


@pytest.mark.skipif(os.geteuid() != 0, reason="the case of a process that may write any file needs root")
def test_as_root_the_input_is_never_linked_modules_could_write_through_a_read_only_link(tmp_path: Path) -> None:
    source = dropped(tmp_path / "in")
    assert staging.links(source, tmp_path) is False
    assert staging.stage(source, tmp_path / "staged", tmp_path) in ("reflink", "copy")
    assert source.stat().st_mode & 0o200  # the user's file keeps its write bit


def as_nobody(folder: Path, body: str) -> subprocess.CompletedProcess:
    """Run `body` (Python, with os, Path and staging imported) in `folder` as the user nobody; it must succeed.

    Linking is chosen only by a process that cannot override file modes, so these tests become
    unprivileged. Everything is imported, and the folder entered, first: nobody may not read root's
    interpreter or traverse pytest's (root-only) temporary folders.
    """
    if os.geteuid() != 0:
        pytest.skip("this test becomes the user nobody to be unprivileged, which needs root")
    folder.mkdir()
    folder.chmod(0o777)
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from chute import staging\n"
        "os.chdir(sys.argv[1]); os.setgid(65534); os.setuid(65534)\n"
    ) + body
    out = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out


def test_an_unprivileged_daemon_links_the_input_read_only_and_records_its_mode(tmp_path: Path) -> None:
    folder = tmp_path / "nobody"
    out = as_nobody(
        folder,
        "f = Path('.'); (f / 'claim').mkdir(); (f / 'ws').mkdir()\n"
        "(f / 'claim' / 'clip.txt').write_text('user'); os.chmod(f / 'claim' / 'clip.txt', 0o644)\n"
        "print(staging.stage(f / 'claim' / 'clip.txt', f / 'ws' / 'clip.txt', f / 'claim'))\n",
    )
    if out.stdout.strip() == "reflink":
        pytest.skip("this filesystem clones files (a reflink is chosen before a link)")
    assert out.stdout.strip() == "link"
    claimed = folder / "claim" / "clip.txt"
    assert claimed.stat().st_ino == (folder / "ws" / "clip.txt").stat().st_ino
    assert claimed.stat().st_mode & 0o777 == 0o444  # read-only while the run holds it
    assert (folder / "claim" / ".mode").read_text() == "644"  # given back before delivery


def test_an_unprivileged_daemon_links_a_folder_delivery_read_only_and_a_crash_gives_every_mode_back(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "nobody"
    out = as_nobody(
        folder,
        "c = Path('claim'); (c / 'CARD' / 'CLIPS').mkdir(parents=True); Path('ws').mkdir()\n"
        "(c / 'CARD' / 'CLIPS' / 'A001.mov').write_text('a'); (c / 'CARD' / 'card.md5').write_text('m')\n"
        "os.chmod(c / 'CARD' / 'card.md5', 0o600)\n"
        "print(staging.stage_tree(c / 'CARD', Path('ws') / 'card', c))\n",
    )
    assert out.stdout.strip() == "link"
    claimed, staged = folder / "claim" / "CARD", folder / "ws" / "card"
    assert claimed.joinpath("CLIPS", "A001.mov").stat().st_ino == staged.joinpath("CLIPS", "A001.mov").stat().st_ino
    assert {p.stat().st_mode & 0o222 for p in claimed.rglob("*") if p.is_file()} == {0}  # read-only while held
    claims.restore_mode(folder / "claim", claimed)  # what the next attempt (or a release) does after a crash
    assert (claimed / "card.md5").stat().st_mode & 0o777 == 0o600
    assert (claimed / "CLIPS" / "A001.mov").stat().st_mode & 0o200
    assert not (folder / "claim" / claims.MODES).exists()


def test_a_run_needs_its_reserve_plus_the_input_it_copies(project: Project, tmp_path: Path) -> None:
    spec = project.spec("one", dropped(tmp_path / "in"), work_reserve=1000)
    assert staging.needs(spec, 14, spec.input_path, None) == 1014
    assert staging.has_room(spec.work_dir, 0) is True
    assert staging.has_room(tmp_path / "gone", 0) is False


def test_machine_errors_are_told_from_the_files(tmp_path: Path) -> None:
    assert staging.machine_errno(OSError(28, "No space left on device"))
    assert not staging.machine_errno(OSError(2, "No such file or directory"))
    assert staging.within(str(tmp_path / "a" / "b"), tmp_path)
    assert not staging.within("/elsewhere", tmp_path) and not staging.within(None, tmp_path)


def test_a_dead_owners_workspaces_are_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    work = tmp_path / "work"
    me = Identity.mine()
    live = staging.owner_dir(work, me, "live-owner")
    (live / "run.abc").mkdir()
    dead = work / "dead-owner"
    (dead / "run.def").mkdir(parents=True)
    record = me.record() | {"pid": 2**22 + 1, "started": 1}  # a pid that is not running
    (dead / staging.OWNER).write_text(json.dumps(record))
    old = work / "20261124T180512Z-3f9a1c"  # a workspace of a chute before owner folders
    old.mkdir()
    stranger = work / "not-ours"  # no record and not chute's name: never touched
    stranger.mkdir()
    assert sorted(staging.remove_dead_owners(work)) == sorted([dead, old])
    assert sorted(p.name for p in work.iterdir()) == ["live-owner", "not-ours"]
    assert staging.remove_owner_dir(live) is False  # a workspace is still in it
    (live / "run.abc").rmdir()
    assert staging.remove_owner_dir(live) is True and not live.exists()
