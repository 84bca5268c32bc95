"""The watcher's table of names (settling.py): when a real file in a real folder counts as settled."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from chute.settling import IGNORED, Table


def never_writing(name: str, now: float) -> bool:
    return False


def look(table: Table, path: Path, now: float, writing=never_writing) -> bool:
    return table.looked(path.name, os.lstat(path), now, writing)


def test_a_file_unchanged_for_its_settle_time_is_settled_and_offered(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    table = Table(settle=1.0)
    assert not look(table, clip, 0.0)
    assert table.next_timer() == 1.0  # the watcher wakes when it may have settled
    assert table.due(1.0) == ["clip.mp4"]
    assert look(table, clip, 1.0)
    assert [name for name, _ in table.offer(["clip.mp4"], None)] == ["clip.mp4"]


def test_a_file_that_changed_starts_its_settle_time_again(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    table = Table(settle=1.0)
    look(table, clip, 0.0)
    clip.write_bytes(b"xy")  # still arriving
    assert not look(table, clip, 0.5)
    assert not look(table, clip, 1.0)  # its first settle time is up, but it changed since
    assert look(table, clip, 1.5)


def test_an_event_on_a_settled_file_takes_it_off_the_offer(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    table = Table(settle=1.0)
    look(table, clip, 0.0)
    assert look(table, clip, 1.0) and "clip.mp4" in table.ready
    table.changed("clip.mp4", 1.2)  # inotify: something happened to it
    assert "clip.mp4" not in table.ready and table.offer(["clip.mp4"], None) == []
    assert not look(table, clip, 2.0) and look(table, clip, 2.2)


def test_a_file_a_writer_holds_is_not_settled(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    table = Table(settle=1.0)
    look(table, clip, 0.0)
    assert not look(table, clip, 5.0, writing=lambda name, now: True)
    assert table.next_timer() == 6.0  # looked at again a settle time later
    assert look(table, clip, 6.0)


def test_a_vanished_file_is_forgotten_and_wakes_nobody(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    table = Table(settle=1.0)
    look(table, clip, 0.0)
    clip.unlink()
    table.forget("clip.mp4")
    assert table.seen == {} and table.ready == {}
    assert table.next_timer() == float("inf") and table.due(10.0) == []
    clip.write_bytes(b"x")  # one of the same name, later, is new: it settles from its own first look
    assert not look(table, clip, 20.0) and look(table, clip, 21.0)


def test_a_name_that_becomes_a_file_is_judged_as_one(tmp_path):
    table = Table(settle=1.0)
    table.judged("thing", stat.S_IFDIR)
    table.judged(".hidden", IGNORED)
    (tmp_path / "thing").write_bytes(b"x")
    assert not look(table, tmp_path / "thing", 0.0)
    assert table.kind("thing") == stat.S_IFREG and table.kind(".hidden") == IGNORED
    assert look(table, tmp_path / "thing", 1.0)
