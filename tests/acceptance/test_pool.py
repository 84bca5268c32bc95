"""The process pool: a crashing module never breaks it; a pool worker that dies is replaced and its runs run again."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.harness import Daemon, Setup, assert_processed_once, drop, files, wait_until


def start(tmp_path: Path) -> tuple[dict, Daemon]:
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    Path(inbox["path"]).mkdir(exist_ok=True)
    return inbox, Daemon(setup.write())


def test_a_module_that_segfaults_or_aborts_fails_its_run_and_nothing_else(tmp_path):
    inbox, daemon = start(tmp_path)
    path = Path(inbox["path"])
    good = {f"good-{i}.bin": f"good {i}\n".encode() for i in range(6)}
    with daemon as d:
        drop(path, "crash.bin", b"segv\n")
        drop(path, "aborts.bin", b"abort\n")
        for name, data in good.items():
            drop(path, name, data)
        wait_until(lambda: len(files(Path(inbox["archive"]))) == 6 and len(files(Path(inbox["quarantine"]))) == 2, 30)
        assert d.events("executor.worker_died") == []  # the module died, not the pool worker
    reports = {
        name: json.loads((Path(inbox["quarantine"]) / name / "report.json").read_text()) for name in ("crash", "aborts")
    }
    assert reports["crash"]["error"]["reason"] == f"killed by signal {signal.SIGSEGV.value}"
    assert reports["aborts"]["error"]["reason"] == f"killed by signal {signal.SIGABRT.value}"
    assert all(r["error"]["step"] == "first" and r["error"]["module"] == "copy" for r in reports.values())
    assert sorted(files(Path(inbox["outbox"]))) == sorted(n.removesuffix(".bin") for n in good)


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def test_a_pool_worker_that_dies_charges_only_its_own_run(tmp_path):
    inbox, daemon = start(tmp_path)
    path = Path(inbox["path"])
    inputs = {f"long-{i}.bin": f"sleep=1.5\nlong {i}\n".encode() for i in range(2)}
    inputs.update({f"short-{i}.bin": f"short {i}\n".encode() for i in range(4)})
    with daemon as d:
        for name, data in inputs.items():
            if name.startswith("long"):
                drop(path, name, data)
        started = d.wait_event("entry.started", count=2)
        # Kill the pool worker running the first run (the module's parent, or its launcher's parent).
        run_id, other = started[0]["run_id"], started[1]["run_id"]
        worker = started[0]["pid"]  # the module: forked by the warm launcher, or started by the worker
        while parent_of(worker) != d.pid:
            worker = parent_of(worker)
        os.kill(worker, signal.SIGKILL)
        d.wait_event("executor.worker_died")
        for name, data in inputs.items():
            if name.startswith("short"):
                drop(path, name, data)
        wait_until(lambda: len(files(Path(inbox["archive"]))) == len(inputs), 40)
        # The dead worker's workspace went with it (the daemon owns it), not at the next start.
        wait_until(lambda: [p for p in (tmp_path / "chute-work").glob("*/*") if p.name != ".owner"] == [], 10)
        assert d.stop() == 0
        assert len(d.events("run.published", run_id=run_id)) == 1  # run again under its claim, once
        [deferred] = d.events("run.deferred", run_id=run_id)
        assert deferred["fault"] == "crash" and "died" in deferred["reason"]
        # The run in the other worker was not touched: one start of its first step, no deferral.
        assert len(d.events("entry.started", run_id=other, step="first")) == 1
        assert d.events("run.deferred", run_id=other) == []
        assert d.events("run.quarantined") == []
    assert_processed_once(inbox, inputs)
