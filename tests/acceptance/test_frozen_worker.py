"""A module that stops (SIGSTOP) what runs it never freezes a worker for good (issue 19, item 2).

The daemon kills a pool worker that is stopped or stops beating, and the worker kills a warm
launcher that is stopped or stops answering; either way the run is charged as a crash, the file
reaches quarantine after max_crashes, and the other files keep flowing.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.harness import (
    COPY_MODULE,
    Daemon,
    Setup,
    assert_processed_once,
    drop,
    files,
    processes_with,
    status_json,
    wait_until,
)

# Prepended to the harness's copy module: a first line `stopparent` stops the module's parent (its warm
# launcher, or the pool worker that started it fresh); `stopworker` stops the pool worker even from a
# warm launcher. Then the module goes on, copies and exits 0: only its exit goes unseen.
FREEZER = """\
import os, signal, sys

def _parent_of(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rpartition(b")")[2].split()[1])

def _is_launcher(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return b"chute.launcher" in f.read()

with open(dict(zip(sys.argv[1::2], sys.argv[2::2]))["--input"], "rb") as _f:
    _what = _f.readline().strip()
if os.environ["CHUTE_STEP"] == "first" and _what in (b"stopparent", b"stopworker"):
    _target = os.getppid()
    if _what == b"stopworker" and _is_launcher(_target):
        _target = _parent_of(_target)
    os.kill(_target, signal.SIGSTOP)
"""


def freezer_setup(tmp_path: Path, **config) -> tuple[Setup, dict]:
    setup = Setup(tmp_path, **config)
    (setup.defs / "modules" / "copy" / "main.py").write_text(FREEZER + COPY_MODULE)
    inbox = setup.inbox()
    Path(inbox["path"]).mkdir(exist_ok=True)
    return setup, inbox


def stopped_processes(marker: str) -> list[int]:
    """The daemon's processes (by its marker) in state T."""
    found = []
    for pid in processes_with(marker):
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        if stat.rpartition(b")")[2].split()[0] == b"T":
            found.append(pid)
    return found


@pytest.mark.parametrize(
    "launcher, what",
    [("warm", "stopparent"), ("fresh", "stopparent"), ("warm", "stopworker")],
    ids=["warm-launcher-stopped", "fresh-worker-stopped", "warm-worker-stopped"],
)
def test_a_module_that_stops_its_parent_is_quarantined_after_max_crashes_while_others_flow(tmp_path, launcher, what):
    setup, inbox = freezer_setup(tmp_path, max_crashes=2, launcher={"mode": launcher})
    config = setup.write()
    path = Path(inbox["path"])
    good = {f"good-{n}.bin": f"good {n}\n".encode() for n in range(4)}
    with Daemon(config) as d:
        drop(path, "frozen.bin", f"{what}\n".encode())
        for name, data in good.items():
            drop(path, name, data)
        [q] = d.wait_event("run.quarantined", file="frozen.bin", timeout=120)
        wait_until(lambda: set(files(Path(inbox["archive"]))) == set(good), 60)
        assert stopped_processes(d.marker) == []  # no worker or launcher left frozen
        active = status_json(config)["active"]
        assert [r for r in active if r["state"] == "running"] == []  # `chute status` shows nothing stuck
        deferred = d.events("run.deferred", file="frozen.bin")
        assert d.stop() == 0
    assert deferred and {ev["fault"] for ev in deferred} == {"crash"}
    assert "stopped" in q["reason"] and q["reason"].endswith("in 2 runs of this file"), q["reason"]
    frozen_by = "executor.worker_frozen" if (launcher, what) != ("warm", "stopparent") else "launcher.frozen"
    assert d.events(frozen_by)
    quarantine = Path(inbox["quarantine"])
    assert files(quarantine) == ["frozen"]
    report = json.loads((quarantine / "frozen" / "report.json").read_text())
    assert report["status"] == "failed" and "stopped" in report["error"]["reason"]
    assert (quarantine / "frozen" / "frozen.bin").read_bytes() == f"{what}\n".encode()
    os.rename(quarantine / "frozen", tmp_path / "frozen-report")  # the rest is exactly the good files
    assert_processed_once(inbox, good)


def test_a_stop_with_a_frozen_worker_ends_and_puts_the_file_back(tmp_path):
    """A worker stopped by its module is killed and its file released: the stop does not wait for it."""
    setup, inbox = freezer_setup(tmp_path, max_crashes=100, shutdown_timeout=300, launcher={"mode": "fresh"})
    config = setup.write()
    path = Path(inbox["path"])
    with Daemon(config) as d:
        drop(path, "frozen.bin", b"stopparent\n")
        d.wait_event("entry.started", file="frozen.bin")
        d.signal(signal.SIGTERM)
        # Long before shutdown_timeout (300 s): a frozen worker is killed, not waited for.
        assert d.proc.wait(60) == 0
        assert d.events("executor.worker_frozen") and d.events("executor.stuck") == []
        assert d.events("run.released", file="frozen.bin")
        wait_until(lambda: processes_with(d.marker) == [], 10)
    assert files(path) == ["frozen.bin"] and (path / "frozen.bin").read_bytes() == b"stopparent\n"
    assert files(Path(inbox["quarantine"])) == [] and files(Path(inbox["outbox"])) == []
