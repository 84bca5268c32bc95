"""Folders that go away, fill up, or live on another filesystem: nothing lost, nothing twice (contract §5).

The full disks are real: a small tmpfs (conftest's `tmpfs` fixture, which needs
root and skips with the reason otherwise) filled by a file until ENOSPC.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from tests.harness import Daemon, Setup, assert_processed_once, claimed_inputs, drop, files, wait_until


def fill(folder: Path) -> Path:
    """Write `folder/filler` until the filesystem is full; returns it (delete it to free the space)."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def hidden(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def test_an_inbox_renamed_away_pauses_and_its_files_are_processed_once_when_it_is_back(tmp_path):
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    config = setup.write()
    path = Path(inbox["path"])
    away = tmp_path / "away"
    with Daemon(config) as d:
        drop(path, "inflight.bin", b"sleep=1.5\nin flight when the share went\n")
        d.wait_event("entry.started", file="inflight.bin")
        os.rename(path, away)  # an unmounted share, claims and all
        d.wait_event("inbox.unavailable", inbox=str(path))
        inputs = {"inflight.bin": b"sleep=1.5\nin flight when the share went\n"}
        for n in range(3):  # files that arrive on the share while this host cannot see it
            inputs[f"while-away-{n}.bin"] = f"while away {n}\n".encode()
            drop(away, f"while-away-{n}.bin", inputs[f"while-away-{n}.bin"])
        # Its modules finish, but its claim went with the share: the delivery waits, the file is not lost.
        d.wait_event("run.deferred", file="inflight.bin")
        assert d.events("run.discarded") == []
        assert not path.exists(), "the daemon recreated a vanished inbox"
        os.rename(away, path)
        d.wait_event("inbox.available", inbox=str(path))
        wait_until(lambda: len(files(inbox["archive"])) == len(inputs) and not claimed_inputs(path), 60)
        assert d.stop() == 0
        assert d.events("run.quarantined") == [] and d.events("daemon.error") == []
    assert_processed_once(inbox, inputs)


def test_a_full_outbox_defers_the_run_keeps_the_input_claimed_and_publishes_once_space_is_back(tmp_path, tmpfs):
    outbox = tmpfs("1m")
    setup = Setup(tmp_path)
    inbox = setup.inbox(outbox=str(outbox / "out"))
    config = setup.write()
    path = Path(inbox["path"])
    data = b"big\n" + os.urandom(256 * 1024)
    with Daemon(config) as d:
        (outbox / "out").mkdir(exist_ok=True)
        filler = fill(outbox)
        drop(path, "big.bin", data)
        d.wait_event("run.deferred", file="big.bin")
        assert [p.name for p in claimed_inputs(path)] == ["big.bin"]  # claimed, not quarantined
        assert files(outbox / "out") == [] and hidden(outbox / "out") == []  # no partial result anywhere
        assert files(inbox["quarantine"]) == []
        filler.unlink()
        d.wait_event("run.published", file="big.bin", timeout=30)
        wait_until(lambda: files(inbox["archive"]), 10)
        assert d.stop() == 0
    assert_processed_once(inbox, {"big.bin": data})


def test_a_full_archive_never_publishes_twice(tmp_path, tmpfs):
    archive = tmpfs("1m")
    setup = Setup(tmp_path)
    inbox = setup.inbox(archive=str(archive / "done"))
    config = setup.write()
    path = Path(inbox["path"])
    data = b"big\n" + os.urandom(256 * 1024)
    with Daemon(config) as d:
        (archive / "done").mkdir(exist_ok=True)
        filler = fill(archive)
        drop(path, "big.bin", data)
        d.wait_event("run.published", file="big.bin")
        d.wait_event("run.deferred", file="big.bin")  # the input cannot be put away yet
        assert [p.name for p in claimed_inputs(path)] == ["big.bin"]
        filler.unlink()
        wait_until(lambda: files(archive / "done") and not claimed_inputs(path), 30)
        assert d.stop() == 0
        assert len(d.events("run.published")) == 1
    assert files(inbox["outbox"]) == ["big"], "published twice"
    assert_processed_once(inbox, {"big.bin": data})


def test_archive_and_quarantine_on_another_filesystem_are_reached_by_copy_and_rename(tmp_path, tmpfs):
    other = tmpfs("16m")
    setup = Setup(tmp_path)
    inbox = setup.inbox(archive=str(other / "done"), quarantine=str(other / "failed"))
    config = setup.write()
    path = Path(inbox["path"])
    good = b"good\n" + os.urandom(512 * 1024)
    bad = b"fail\n" + os.urandom(1024)
    with Daemon(config) as d:
        drop(path, "good.bin", good)
        drop(path, "bad.bin", bad)
        wait_until(lambda: files(other / "done") and files(other / "failed") and not claimed_inputs(path), 30)
        assert d.stop() == 0
    assert files(other / "done") == ["good.bin"] and (other / "done" / "good.bin").read_bytes() == good
    assert files(other / "failed") == ["bad"]
    assert files(other / "failed" / "bad") == ["bad.bin", "logs", "report.json"]
    assert (other / "failed" / "bad" / "bad.bin").read_bytes() == bad
    assert json.loads((other / "failed" / "bad" / "report.json").read_text())["status"] == "failed"
    assert hidden(other / "done") == [] and hidden(other / "failed") == []  # no .chute-copy-* left
    assert files(path) == [] and claimed_inputs(path) == []
