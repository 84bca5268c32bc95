"""Live progress in `chute status` (contract §11; issue 21): a module's progress reaches the daemon and the CLI.

A real daemon runs the test module, which on its first step prints `CHUTE_PROGRESS 0.5` and then waits
until the test creates the flag file its input names: the run is held at 50% while the test looks.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from chute import control_client

from tests.harness import CHUTE, Daemon, Setup, drop, each_copy_job, files, state_dir_of, status_json, wait_until

HALF_THEN_WAIT = """\
import os, sys, time
_args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
with open(_args["--input"], "rb") as _f:
    _first = _f.readline().strip()
if _first.startswith(b"wait=") and os.environ["CHUTE_STEP"] == "first":
    print("CHUTE_PROGRESS 0.5", flush=True)
    while not os.path.exists(_first[5:].decode()):
        time.sleep(0.05)
"""
ELAPSED = r"\((\d+h)?(\d+m)?\d+s\)$"


def held_setup(setup: Setup) -> dict:
    """An inbox whose module holds a run at 50% until its flag file appears."""
    inbox = setup.inbox()
    main = setup.defs / "modules" / "copy" / "main.py"
    main.write_text(HALF_THEN_WAIT + main.read_text())
    return inbox


def status_text(config: Path) -> str:
    proc = subprocess.run([str(CHUTE), "status", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def at_half(config: Path) -> dict | None:
    """The progress of the one active run once it says its first entry is at 50%, else None."""
    active = status_json(config)["active"]
    progress = active[0].get("progress") if active else None
    if progress and progress.get("entries") and progress["entries"][0]["fraction"] == 0.5:
        return progress
    return None


def dask_workers_seen(config: Path) -> list[dict] | None:
    """The daemon's workers once each has a heartbeat age from the scheduler, else None."""
    workers = control_client.request(state_dir_of(config), {"op": "status"})["workers"]
    return workers if workers and all(w["heartbeat_age_s"] is not None for w in workers) else None


def hold_and_look(daemon: Daemon, config: Path, inbox: dict, tmp_path: Path) -> None:
    """Drop a held file; status shows its step, entry, 50% and elapsed time; released, no progress remains."""
    flag = tmp_path / "release"
    drop(Path(inbox["path"]), "clip.bin", f"wait={flag}\n".encode())
    progress = wait_until(lambda: at_half(config), 60)
    assert progress["step"] == "first" and (progress["index"], progress["steps"]) == (1, 2)
    assert [(e["module"], e["state"]) for e in progress["entries"]] == [("copy", "running")]
    assert progress["elapsed_s"] >= 0
    lines = status_text(config).splitlines()
    run_line = next(i for i, line in enumerate(lines) if "clip.bin" in line and "running" in line)
    shown = lines[run_line + 1]
    assert shown.startswith("    step 1/2 first: copy 50%  ("), lines
    assert re.search(ELAPSED, shown), shown
    flag.touch()
    wait_until(lambda: files(Path(inbox["archive"])) == ["clip.bin"], 60)
    wait_until(lambda: not status_json(config)["active"], 30)
    answer = control_client.request(state_dir_of(config), {"op": "status"})
    assert answer["progress"] == {}
    assert not [line for line in status_text(config).splitlines() if line.startswith("    step ")]
    assert daemon.stop() == 0


def test_status_shows_a_running_runs_step_entries_fraction_and_elapsed_time(tmp_path):
    setup = Setup(tmp_path)
    inbox = held_setup(setup)
    config = setup.write()
    with Daemon(config) as d:
        hold_and_look(d, config, inbox, tmp_path)


def test_status_without_a_daemon_prints_what_the_ledger_says_and_no_error(tmp_path):
    setup = Setup(tmp_path)
    setup.inbox()
    config = setup.write()
    with Daemon(config) as d:
        assert d.stop() == 0
    assert status_text(config) == "no runs yet\nqueued and running:\nrecent:\n"


def test_dask_run_shows_its_progress_too(tmp_path):
    pytest.importorskip("distributed", reason="the Dask executor needs dask.distributed (`make venv` installs it)")
    from tests.dask_cluster import Cluster

    cluster = Cluster(tmp_path)
    try:
        cluster.add_worker("a")
        cluster.wait_for_workers(1)
        setup = Setup(tmp_path, executor={"kind": "dask", "address": cluster.address})
        inbox = held_setup(setup)
        Path(inbox["path"]).mkdir()
        config = setup.write()
        with Daemon(config) as d:
            d.wait_event("executor.worker_joined")
            # The page's and the socket's workers: the Dask worker with the age of its last heartbeat.
            [worker] = wait_until(lambda: dask_workers_seen(config), 30)
            assert worker["state"] == "allowed" and worker["nthreads"] >= 1 and 0 <= worker["heartbeat_age_s"] < 60
            hold_and_look(d, config, inbox, tmp_path)
    finally:
        cluster.close()


def test_a_for_each_entry_shows_its_fraction_across_the_folders_files(tmp_path):
    """Three files of a folder copied once each: two done, the third held at 50%, so the entry is 2.5/3 along."""
    setup = Setup(tmp_path)
    held_setup(setup)
    (setup.defs / "jobs" / "each_copy.yaml").write_text(yaml.safe_dump(each_copy_job(), sort_keys=False))
    inbox = setup.inbox("cards", job="each_copy", unit="folder")
    config = setup.write()
    flag = tmp_path / "release"
    with Daemon(config):
        aside = tmp_path / "BATCH"
        aside.mkdir()
        for name, data in (("a.bin", b"quick\n"), ("b.bin", b"quick\n"), ("c.bin", f"wait={flag}\n".encode())):
            (aside / name).write_bytes(data)
        wait_until(lambda: Path(inbox["path"]).is_dir())
        aside.rename(Path(inbox["path"]) / "BATCH")

        def two_of_three() -> dict | None:
            active = status_json(config)["active"]
            entries = (active[0].get("progress") or {}).get("entries") if active else None
            return entries[0] if entries and entries[0].get("files_done") == 2 else None

        entry = wait_until(two_of_three, 60)
        assert (entry["state"], entry["files"], entry["fraction"]) == ("running", 3, round(2.5 / 3, 3))
        assert any(
            line.startswith("    step 1/1 first: copy 83% (2/3 files)") for line in status_text(config).splitlines()
        )
        flag.touch()
        wait_until(lambda: files(Path(inbox["archive"])) == ["BATCH"], 60)
