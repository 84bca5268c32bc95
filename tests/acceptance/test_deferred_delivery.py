"""A delivery deferred by a full outbox or quarantine keeps its built result: the retry only delivers.

The full disks are real: a small tmpfs (conftest's `tmpfs` fixture, which needs
root and skips with the reason otherwise). Modules are counted by their
`entry.started` events: the test job has two steps, so a file whose modules ran
once has exactly two.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path

from tests.acceptance.test_outages import fill
from tests.harness import Daemon, Setup, assert_processed_once, claimed_inputs, drop, files, wait_until


def module_runs(*daemons: Daemon) -> Counter:
    """How many module processes each file had started, over the logs of `daemons`."""
    return Counter(ev["file"] for d in daemons for ev in d.events("entry.started"))


def kept_results(work: Path) -> list[str]:
    return files(work / "results")


def test_a_full_outbox_retries_only_the_delivery_and_every_module_runs_once_per_file(tmp_path, tmpfs):
    outbox = tmpfs("1m") / "out"
    outbox.mkdir()
    consumed = tmp_path / "consumed"  # where a downstream user moves results to, freeing the outbox
    consumed.mkdir()
    setup = Setup(tmp_path)
    inbox = setup.inbox(outbox=str(outbox))
    config = setup.write()
    inputs = {f"f{n}.bin": f"file {n}\n".encode() + os.urandom(300 * 1024) for n in range(10)}
    with Daemon(config) as d:
        for name, data in inputs.items():
            drop(Path(inbox["path"]), name, data)
        d.wait_event("run.deferred", timeout=60)  # the outbox filled up with results nobody took yet
        assert files(consumed) == []

        def all_taken():
            for name in files(outbox):
                shutil.move(outbox / name, consumed / name)
            return len(files(consumed)) == len(inputs) and len(files(inbox["archive"])) == len(inputs)

        wait_until(all_taken, timeout=240, interval=0.2)
        assert d.stop() == 0
        assert module_runs(d) == {name: 2 for name in inputs}, "modules ran again for a deferred delivery"
        assert Counter(ev["file"] for ev in d.events("run.started")) == {name: 1 for name in inputs}
        assert d.events("run.resumed_delivery"), "no delivery was retried from a kept result"
        assert len(d.events("run.published")) == len(inputs)
    assert files(inbox["quarantine"]) == [] and claimed_inputs(Path(inbox["path"])) == []
    assert files(inbox["archive"]) == sorted(inputs)
    assert files(consumed) == sorted(Path(n).stem for n in inputs)
    for name, data in inputs.items():
        result = consumed / Path(name).stem
        assert (result / "result.bin").read_bytes() == data
        assert json.loads((result / "manifest.json").read_text())["input"]["name"] == name
    assert kept_results(tmp_path / "chute-work") == []


def test_a_kept_result_survives_kill_9_and_is_delivered_once_by_the_next_daemon(tmp_path, tmpfs):
    space = tmpfs("1m")
    outbox = space / "out"
    outbox.mkdir()
    setup = Setup(tmp_path)
    inbox = setup.inbox(outbox=str(outbox))
    config = setup.write()
    work = tmp_path / "chute-work"
    data = b"big\n" + os.urandom(256 * 1024)
    first = Daemon(config, name="first")
    with first:
        filler = fill(space)
        drop(Path(inbox["path"]), "big.bin", data)
        first.wait_event("run.deferred", file="big.bin")
        first.kill()  # kill -9 while the run waits to deliver
    filler.unlink()
    copy = tmp_path / "kept-copy"  # the kept result as it was, to put back later
    if (work / "results").is_dir():
        shutil.copytree(work / "results", copy)
    else:
        copy.mkdir()
    with Daemon(config, name="second") as second:
        second.wait_event("run.published", file="big.bin")
        wait_until(lambda: files(inbox["archive"]), 10)
        assert second.stop() == 0
        assert module_runs(first, second) == {"big.bin": 2}, "the next daemon ran the modules again"
        assert second.events("run.resumed_delivery", file="big.bin")
    assert kept_results(work) == []
    assert_processed_once(inbox, {"big.bin": data})

    # A crash between the delivery and the kept result's removal leaves it behind: it is removed, never delivered.
    shutil.copytree(copy, work / "results", dirs_exist_ok=True)
    with Daemon(config, name="third") as third:
        wait_until(lambda: kept_results(work) == [], 10)
        assert third.stop() == 0
        assert third.events("run.published") == [] and third.events("run.resumed_delivery") == []
    assert_processed_once(inbox, {"big.bin": data})


def test_a_full_quarantine_keeps_the_report_and_quarantines_once_without_running_again(tmp_path, tmpfs):
    space = tmpfs("1m")
    quarantine = space / "failed"
    quarantine.mkdir()
    setup = Setup(tmp_path)
    inbox = setup.inbox(quarantine=str(quarantine))
    config = setup.write()
    with Daemon(config) as d:
        filler = fill(space)
        drop(Path(inbox["path"]), "bad.bin", b"fail\n")
        d.wait_event("run.deferred", file="bad.bin")
        filler.unlink()
        d.wait_event("run.quarantined", file="bad.bin", timeout=30)
        assert d.stop() == 0
        assert module_runs(d) == {"bad.bin": 1}  # the first step failed; it ran once
        assert len(d.events("run.quarantined")) == 1
    assert files(quarantine) == ["bad"]
    assert (quarantine / "bad" / "bad.bin").read_bytes() == b"fail\n"
    report = json.loads((quarantine / "bad" / "report.json").read_text())
    assert report["status"] == "failed" and report["error"]["exit_code"] == 3
    assert files(quarantine / "bad" / "logs"), "the module's log was not kept with the report"
    assert hashlib.sha256(b"fail\n").hexdigest() == report["input"]["sha256"]
    assert claimed_inputs(Path(inbox["path"])) == [] and kept_results(tmp_path / "chute-work") == []
