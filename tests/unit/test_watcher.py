"""The watcher's pure parts: which names are ignored, which filesystem an inbox is on, when a file has settled.

The network-filesystem cases read a fake mountinfo file: a cifs or NFS mount cannot be
made in this container (no cifs/nfs in the kernel, see tests/acceptance/test_samba.py),
so the lines the kernel would write for one are written here by hand, in the format of
proc(5) /proc/[pid]/mountinfo.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from chute.config import Inbox
from chute.mounts import filesystem_type, watch_mode
from chute.namefilter import NameFilter
from chute.watcher import EventHint, InboxWatcher
from chute.writers import WALK_TTL, Writers

from tests.conftest import require_tool
from tests.harness import wait_until

# --- NameFilter (contract §5.1) ---


def ignore_reason(name: str, include: list[str], exclude: list[str]) -> str | None:
    return NameFilter(include, exclude).reason(name)


HIDDEN, SUFFIX, SYSTEM = "hidden or temporary name", "partial download or temporary suffix", "system file"


@pytest.mark.parametrize(
    "name, reason",
    [
        (".clip.mp4", HIDDEN),
        (".clip.mp4.Xa81Qz", HIDDEN),  # rsync's temp name
        ("~$report.docx", HIDDEN),  # an Office lock file
        ("clip.mp4.part", SUFFIX),
        ("clip.mp4.PART", SUFFIX),
        ("clip.mp4.partial", SUFFIX),
        ("clip.mp4.Partial", SUFFIX),
        ("clip.mp4.tmp", SUFFIX),
        ("clip.mp4.TMP", SUFFIX),
        ("clip.mp4.crdownload", SUFFIX),
        ("clip.mp4.download", SUFFIX),
        ("clip.mp4.Download", SUFFIX),
        ("Thumbs.db", SYSTEM),
        ("thumbs.DB", SYSTEM),
        ("desktop.ini", SYSTEM),
        ("Desktop.INI", SYSTEM),
    ],
)
def test_built_in_ignores(name, reason):
    assert ignore_reason(name, ["*"], []) == reason


@pytest.mark.parametrize(
    "name",
    [
        "clip.mp4",
        "clip.partition.mp4",
        "tmp.mp4",
        "part",
        "a~$b.mp4",
        "clip.mp4.",
        "Thumbs.db.mp4",
        "-rf.mp4",
        "new\nline.mp4",
        "日本語.mp4",
        "x" * 250,
    ],
)
def test_ordinary_names_are_taken(name):
    assert ignore_reason(name, ["*"], []) is None


def test_include_and_exclude_are_case_insensitive_globs():
    include, exclude = ["*.MP4", "*.mov"], ["draft-*", "*.Nfo"]
    assert ignore_reason("clip.mp4", include, exclude) is None
    assert ignore_reason("CLIP.MOV", include, exclude) is None
    assert ignore_reason("notes.txt", include, exclude) == "does not match include"
    assert ignore_reason("Draft-1.mp4", include, exclude) == "matches exclude"
    assert ignore_reason("movie.NFO", ["*"], exclude) == "matches exclude"
    assert ignore_reason("anything", [], []) == "does not match include"


def test_built_in_ignores_come_before_include():
    assert ignore_reason(".clip.mp4", ["*.mp4", ".*"], []) == HIDDEN
    assert ignore_reason("clip.mp4.part", ["*.part"], []) == SUFFIX


# --- filesystem_type and watch_mode ---

MOUNTINFO = """\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:22 / /proc rw,nosuid - proc proc rw
40 22 0:40 / /srv/share rw,relatime shared:20 - cifs //nas/media rw,vers=3.1.1,cache=strict
41 40 0:41 / /srv/share/local rw - ext4 /dev/vdb rw
42 22 0:42 / /mnt/nfs rw,relatime - nfs4 nas:/export rw,vers=4.2
43 22 0:43 / /mnt/with\\040space rw - smb3 //nas/x rw
44 22 0:44 / /mnt/tab\\011and\\134backslash rw - cifs //nas/y rw
45 22 0:45 / /mnt/over rw - ext4 /dev/vdc rw
46 22 0:46 / /mnt/over rw - nfs nas:/over rw
47 22 0:47 / /mnt/sshfs rw - fuse.sshfs me@host:/ rw
48 22 0:48 / /mnt/shared-opt rw shared:7 master:3 propagate_from:2 unbindable - cifs //nas/z rw
"""


@pytest.fixture
def mountinfo(tmp_path) -> str:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    return str(path)


@pytest.mark.parametrize(
    "path, fstype",
    [
        ("/srv/share/inbox", "cifs"),
        ("/srv/share", "cifs"),
        ("/srv/share/local/inbox", "ext4"),  # a mount inside the share: the longest mount point wins
        ("/srv/shared/inbox", "ext4"),  # a sibling whose name starts like the mount point is not in it
        ("/mnt/nfs/in", "nfs4"),
        ("/mnt/with space/in", "smb3"),  # mountinfo writes a space as \040
        ("/mnt/tab\tand\\backslash/in", "cifs"),  # and a tab as \011, a backslash as \134
        ("/mnt/over/in", "nfs"),  # mounted over: the later line is the one on top
        ("/mnt/sshfs/in", "fuse.sshfs"),
        ("/mnt/shared-opt/in", "cifs"),  # any number of optional fields before the " - "
        ("/var/inbox", "ext4"),
    ],
)
def test_filesystem_type_from_mountinfo(mountinfo, path, fstype):
    assert filesystem_type(Path(path), mountinfo) == fstype


def test_filesystem_type_without_mountinfo_is_unknown(tmp_path):
    assert filesystem_type(tmp_path, str(tmp_path / "absent")) is None


def test_filesystem_type_of_a_real_folder_matches_findmnt(tmp_path):
    findmnt = require_tool("findmnt", package="util-linux")
    found = subprocess.run([findmnt, "-n", "-o", "FSTYPE", "-T", str(tmp_path)], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip(f"findmnt, which this test compares with, could not name the folder's filesystem: {found.stderr}")
    assert filesystem_type(tmp_path) == found.stdout.strip()


def inbox(path: str, watch: str = "auto") -> Inbox:
    return Inbox(path=Path(path), job="j", outbox=Path("/o"), quarantine=Path("/q"), archive=Path("/a"), watch=watch)


@pytest.mark.parametrize(
    "path, mode",
    [
        ("/srv/share/inbox", "poll"),
        ("/mnt/nfs/in", "poll"),
        ("/mnt/with space/in", "poll"),
        ("/mnt/sshfs/in", "poll"),
        ("/srv/share/local/inbox", "events"),
        ("/var/inbox", "events"),
    ],
)
def test_auto_polls_network_filesystems_and_uses_events_elsewhere(mountinfo, path, mode):
    assert watch_mode(inbox(path), mountinfo) == mode


@pytest.mark.parametrize("watch", ["events", "poll"])
def test_an_explicit_watch_mode_is_kept(mountinfo, watch):
    assert watch_mode(inbox("/srv/share/inbox", watch), mountinfo) == watch
    assert watch_mode(inbox("/var/inbox", watch), mountinfo) == watch


def test_auto_uses_events_when_the_filesystem_is_unknown(tmp_path):
    assert watch_mode(inbox("/srv/share/inbox"), str(tmp_path / "absent")) == "events"


# --- Writers: who has a file open for writing (a real /proc) ---


def key_of(path):
    st = path.stat()
    return (st.st_dev, st.st_ino)


def test_writers_sees_writers_not_readers(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    key = key_of(path)
    now = 1000.0
    assert Writers().busy({key}, now) == set()
    with open(path, "rb"):
        assert Writers().busy({key}, now) == set()
    with open(path, "ab"):
        assert Writers().busy({key}, now) == {key}
    with open(path, "r+b"):
        assert Writers().busy({key}, now) == {key}


def test_writers_reuses_its_walk_but_reads_flags_fresh(tmp_path):
    paths = [tmp_path / "a", tmp_path / "b"]
    for path in paths:
        path.write_bytes(b"x")
    a, b = key_of(paths[0]), key_of(paths[1])
    writers = Writers()
    with open(paths[0], "ab"), open(paths[1], "rb"):
        assert writers.busy({a, b}, 1000.0) == {a}
    # Closed since the walk: within WALK_TTL the walk is reused, but the flags are read again.
    assert writers.busy({a, b}, 1000.0 + WALK_TTL / 2) == set()
    with open(paths[1], "ab"):
        # Opened for writing after the walk: seen once the walk is renewed.
        assert writers.busy({b}, 1000.0 + WALK_TTL) == {b}


# --- InboxWatcher.scan, driven by `now` ---


def test_a_file_settles_after_staying_unchanged_for_settle_seconds(tmp_path):
    w = InboxWatcher(inbox(str(tmp_path), "poll"), settle=2.0, poll_interval=5.0)
    (tmp_path / "clip.mp4").write_bytes(b"a")
    assert w.scan(100.0).settled == []
    assert w.next_scan == 102.0  # looks again when it could have settled, not a poll later
    assert w.scan(101.9).settled == []
    with open(tmp_path / "clip.mp4", "ab") as f:
        f.write(b"more")
    assert w.scan(102.0).settled == []  # grew: the settle time starts again
    assert w.scan(103.9).settled == []
    assert [name for name, _ in w.scan(104.0).settled] == ["clip.mp4"]


def test_scan_reports_ignored_names_folders_and_symlinks(tmp_path):
    w = InboxWatcher(inbox(str(tmp_path), "poll"), settle=0.0, poll_interval=5.0)
    (tmp_path / ".hidden").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    (tmp_path / "link.mp4").symlink_to(tmp_path / "folder")
    os.mkfifo(tmp_path / "fifo.mp4")
    scan = w.scan(0.0)
    assert scan.available
    assert sorted(scan.ignored) == [(".hidden", HIDDEN), ("folder", "a folder")]
    assert scan.symlinks == ["link.mp4"]
    assert scan.settled == [] and w.scan(1.0).settled == []  # a FIFO is never claimed


def test_a_vanished_inbox_is_unavailable_not_empty(tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(b"a")
    w = InboxWatcher(inbox(str(folder), "poll"), settle=1.0, poll_interval=5.0)
    w.scan(0.0)
    (folder / "clip.mp4").unlink()
    folder.rmdir()
    scan = w.scan(0.5)
    assert not scan.available and scan.error
    assert "clip.mp4" in w.seen  # what was settling is kept for when it comes back


def names(settled) -> list[str]:
    return [name for name, _ in settled]


def test_a_name_ignored_or_a_folder_is_reported_once_and_again_after_it_left(tmp_path):
    w = InboxWatcher(inbox(str(tmp_path), "poll"), settle=0.0, poll_interval=5.0)
    (tmp_path / "clip.mp4.part").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    assert sorted(w.scan(0.0).ignored) == [("clip.mp4.part", SUFFIX), ("folder", "a folder")]
    assert w.scan(5.0).ignored == []  # the daemon logs each once, without a set of its own
    (tmp_path / "clip.mp4.part").unlink()
    (tmp_path / "folder").rmdir()
    assert w.scan(10.0).ignored == []
    (tmp_path / "clip.mp4.part").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    assert sorted(w.scan(15.0).ignored) == [("clip.mp4.part", SUFFIX), ("folder", "a folder")]


def test_a_folder_replaced_by_a_file_of_that_name_is_taken(tmp_path):
    w = InboxWatcher(inbox(str(tmp_path), "poll"), settle=0.0, poll_interval=5.0)
    (tmp_path / "clip.mp4").mkdir()
    assert w.scan(0.0).ignored == [("clip.mp4", "a folder")]
    (tmp_path / "clip.mp4").rmdir()
    (tmp_path / "clip.mp4").write_bytes(b"a")
    w.scan(5.0)
    assert names(w.scan(w.next_scan).settled) == ["clip.mp4"]


def test_a_claimed_name_dropped_again_is_a_new_file(tmp_path):
    w = InboxWatcher(inbox(str(tmp_path), "poll"), settle=1.0, poll_interval=5.0)
    (tmp_path / "clip.mp4").write_bytes(b"first")
    w.scan(0.0)
    assert names(w.scan(1.0).settled) == ["clip.mp4"]
    (tmp_path / "clip.mp4").unlink()  # what the claim's rename does
    w.forget("clip.mp4")
    (tmp_path / "clip.mp4").write_bytes(b"again")
    assert w.scan(5.0).settled == []  # seen at this listing: it must stay unchanged for `settle` first
    assert names(w.scan(6.0).settled) == ["clip.mp4"]


def test_a_file_growing_between_listings_in_polling_mode_restarts_its_settle_time(tmp_path):
    w = InboxWatcher(inbox(str(tmp_path), "poll"), settle=1.0, poll_interval=5.0)
    (tmp_path / "clip.mp4").write_bytes(b"a")
    w.scan(0.0)
    with open(tmp_path / "clip.mp4", "ab") as f:  # no event in polling mode: the settle-time look sees it
        f.write(b"b")
    assert w.scan(1.0).settled == []
    assert w.next_scan == 2.0
    assert names(w.scan(2.0).settled) == ["clip.mp4"]


def test_limit_offers_the_oldest_settled_files_and_a_hint_offers_the_rest(tmp_path):
    w = InboxWatcher(inbox(str(tmp_path), "poll"), settle=1.0, poll_interval=5.0)
    for i, name in enumerate(["a.mp4", "b.mp4", "c.mp4"]):
        (tmp_path / name).write_bytes(b"x")
        w.touched(name, 0.0)
        w.scan(0.1 * i)  # each is first seen a little later than the one before
    assert names(w.scan(2.0, limit=2).settled) == ["a.mp4", "b.mp4"]
    (tmp_path / "a.mp4").unlink()
    w.forget("a.mp4")  # claimed; b.mp4 was not (no free worker)
    assert not w.due(2.5)
    w.hint()  # a worker is free
    assert w.due(2.5)
    assert names(w.scan(2.5, limit=2).settled) == ["b.mp4", "c.mp4"]


def test_a_settled_file_not_claimed_is_offered_again_after_a_poll_interval(tmp_path):
    w = InboxWatcher(inbox(str(tmp_path), "events"), settle=0.0, poll_interval=5.0, rescan_interval=60.0)
    w.watch = "watching"  # what the service sets once inotify watches the folder
    (tmp_path / "clip.mp4").write_bytes(b"x")
    w.scan(0.0)
    assert names(w.scan(0.0).settled) == ["clip.mp4"]
    assert w.next_scan == 5.0  # not claimed (say, a failed rename): tried again, long before the rescan


def events_watcher(tmp_path, settle=1.0) -> InboxWatcher:
    w = InboxWatcher(inbox(str(tmp_path), "events"), settle=settle, poll_interval=5.0, rescan_interval=60.0)
    w.watch = "watching"
    assert w.scan(-5.0).available
    assert w.next_scan == 0.0  # a second listing a poll later, for what came before the inotify watch
    w.scan(0.0)
    assert w.next_scan == 60.0  # an empty inbox watched by inotify: the next listing is the backstop
    return w


def test_in_events_mode_an_event_makes_the_watcher_look_at_that_name_only(tmp_path):
    w = events_watcher(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "unseen.mp4").write_bytes(b"x")  # its event was lost (a queue overflow)
    w.closed("clip.mp4", 1.0)
    assert w.due(1.0)
    w.scan(1.0)
    assert sorted(w.seen) == ["clip.mp4"]
    assert names(w.scan(2.0).settled) == ["clip.mp4"]
    (tmp_path / "clip.mp4").unlink()
    w.forget("clip.mp4")  # claimed
    assert w.scan(59.0).settled == [] and w.seen == {}
    w.scan(60.0)  # the backstop listing finds it
    assert "unseen.mp4" in w.seen


def test_in_events_mode_a_file_written_and_not_closed_is_never_settled(tmp_path):
    w = events_watcher(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(b"x")
    w.wrote("clip.mp4", 1.0)  # a writer /proc cannot show (smbd as another user) still has it open
    w.scan(1.0)
    assert w.scan(2.0).settled == [] and w.scan(10.0).settled == []
    w.closed("clip.mp4", 10.5)
    assert w.scan(11.0).settled == []  # its settle time starts at the close
    assert names(w.scan(11.5).settled) == ["clip.mp4"]


def test_in_events_mode_an_event_restarts_the_settle_time_of_a_settled_file(tmp_path):
    w = events_watcher(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(b"x")
    w.touched("clip.mp4", 1.0)
    w.scan(1.0)
    assert names(w.scan(2.0).settled) == ["clip.mp4"]
    w.touched("clip.mp4", 2.5)  # not claimed yet, and something happened to it
    assert w.scan(3.0).settled == []
    assert names(w.scan(3.5).settled) == ["clip.mp4"]


def test_in_events_mode_a_replaced_folder_is_reported_unavailable_once(tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    w = events_watcher(folder)
    folder.rename(tmp_path / "old")  # a remount between two looks: the inotify watch is on the old folder
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(b"x")
    w.touched("other.mp4", 1.0)
    scan = w.scan(1.0)
    assert not scan.available and "replaced" in scan.error  # the service schedules a new watch when it is back
    assert w.scan(1.5).available and "clip.mp4" in w.seen


@pytest.fixture
def observed(tmp_path):
    """A watcher of tmp_path/inbox fed by a real inotify observer; its backstop listing an hour away."""
    from chute.inotify import Observer

    folder = tmp_path / "inbox"
    folder.mkdir()
    w = InboxWatcher(inbox(str(folder), "events"), settle=0.0, poll_interval=3600.0, rescan_interval=3600.0)
    observer = Observer()
    observer.start()
    w.watch = observer.schedule(EventHint(w, time.monotonic), str(folder))
    assert w.scan(time.monotonic()).available
    yield w
    observer.stop()
    observer.join(10)


def test_an_inotify_event_leads_the_watcher_to_a_dropped_file_without_a_listing(observed):
    folder = Path(observed.path)
    (folder / "clip.mp4").write_bytes(b"x")
    wait_until(lambda: names(observed.scan(time.monotonic()).settled) == ["clip.mp4"], 10)


def test_an_inbox_removed_under_inotify_is_unavailable_at_the_next_look(observed):
    Path(observed.path).rmdir()
    wait_until(lambda: observed.due(time.monotonic()), 10)  # the daemon is woken, not left to its next listing
    assert not observed.scan(time.monotonic()).available


# --- unit: folder and unit: stem (contract §12) ---


def test_in_events_mode_a_folder_changing_deep_inside_restarts_its_settle_time_and_waits_for_its_ready_file(tmp_path):
    w = InboxWatcher(
        Inbox(
            path=tmp_path, job="j", outbox=Path("/o"), quarantine=Path("/q"), archive=Path("/a"), watch="events"
        ).model_copy(update={"unit": "folder", "ready_file": "READY"}),
        settle=1.0,
        poll_interval=5.0,
        rescan_interval=60.0,
    )
    w.watch = "watching"
    deep = tmp_path / "CARD" / "CLIPS" / "DAY1"
    deep.mkdir(parents=True)
    (deep / "A001.mov").write_bytes(b"a")
    (tmp_path / "loose.mov").write_bytes(b"x")
    assert w.scan(0.0).ignored == [("loose.mov", "not a folder")]
    (deep / "A002.mov").write_bytes(b"b")  # no event reaches the top: the settle look walks
    assert w.scan(1.0).settled == []
    (tmp_path / "CARD" / "READY").touch()
    assert w.scan(2.0).settled == []  # changed again (its ready file came): a settle time more
    (settled,) = w.scan(3.0).settled
    assert settled[0] == "CARD" and settled[1].st_size == 2 and settled[1].ready and len(settled[1].files) == 3


def test_a_settled_sidecar_is_never_offered_and_one_with_no_main_file_is_said_once(tmp_path):
    w = InboxWatcher(
        Inbox(
            path=tmp_path, job="j", outbox=Path("/o"), quarantine=Path("/q"), archive=Path("/a"), watch="poll"
        ).model_copy(update={"unit": "stem"}),
        settle=0.0,
        poll_interval=5.0,
    )
    for name in ("clip.mov", "clip.srt", "lonely.srt"):
        (tmp_path / name).write_bytes(b"x")
    w.scan(0.0)
    scan = w.scan(0.0)
    assert names(scan.settled) == ["clip.mov"] and scan.waiting == ["lonely.srt"]
    assert w.scan(10.0).waiting == []
