"""The process pool: a crashing module never breaks it; a pool worker that dies is replaced and its runs run again."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.harness import Daemon, Setup, assert_processed_once, drop, files, processes_with, wait_until


def start(tmp_path: Path) -> tuple[dict, Daemon]:
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    Path(inbox["path"]).mkdir()
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
        assert d.events("executor.broken") == []  # the module died, not the pool worker
    reports = {name: json.loads((Path(inbox["quarantine"]) / name / "report.json").read_text())
               for name in ("crash", "aborts")}
    assert reports["crash"]["error"]["reason"] == f"killed by signal {signal.SIGSEGV.value}"
    assert reports["aborts"]["error"]["reason"] == f"killed by signal {signal.SIGABRT.value}"
    assert all(r["error"]["step"] == "first" and r["error"]["module"] == "copy" for r in reports.values())
    assert sorted(files(Path(inbox["outbox"]))) == sorted(n.removesuffix(".bin") for n in good)


def test_a_pool_worker_that_dies_is_replaced_and_its_runs_run_again_once(tmp_path):
    inbox, daemon = start(tmp_path)
    path = Path(inbox["path"])
    inputs = {f"long-{i}.bin": f"sleep=1.5\nlong {i}\n".encode() for i in range(2)}
    inputs.update({f"short-{i}.bin": f"short {i}\n".encode() for i in range(4)})
    with daemon as d:
        for name, data in inputs.items():
            if name.startswith("long"):
                drop(path, name, data)
        started = d.wait_event("entry.started", count=2)
        # The module's parent is the pool worker running that run: kill the worker, not the module.
        run_id = started[0]["run_id"]
        [module] = wait_until(lambda: processes_with(f"CHUTE_RUN_ID={run_id}"), 10)
        worker = int(Path(f"/proc/{module}/stat").read_text().rpartition(")")[2].split()[1])
        assert worker not in (os.getpid(), d.pid)
        os.kill(worker, signal.SIGKILL)
        d.wait_event("executor.broken")
        for name, data in inputs.items():
            if name.startswith("short"):
                drop(path, name, data)
        wait_until(lambda: len(files(Path(inbox["archive"]))) == len(inputs), 40)
        assert d.stop() == 0
        assert len(d.events("run.published", run_id=run_id)) == 1  # run again under its claim, once
        assert d.events("run.quarantined") == []
    assert_processed_once(inbox, inputs)
