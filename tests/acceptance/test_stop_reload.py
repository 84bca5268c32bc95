"""SIGTERM stops gracefully and gives inputs back; SIGHUP reloads without disturbing runs (contract §8).

Real signals to a real `chute run` (tests/harness.py); systemd is stood in for
by a bound AF_UNIX datagram socket named in $NOTIFY_SOCKET.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import yaml

from tests.harness import (
    TWO_STEP_JOB,
    Daemon,
    NotifySocket,
    Setup,
    assert_processed_once,
    claimed_inputs,
    drop,
    files,
    processes_with,
    wait_until,
)


@pytest.fixture
def notify_socket():
    sock = NotifySocket()
    yield sock
    sock.close()


def nothing_claimed(inbox: Path) -> bool:
    root = inbox / ".chute" / "claimed"
    return not claimed_inputs(inbox) and not (root.exists() and any(root.glob("*/*")))


# --- SIGTERM ---


def test_sigterm_releases_long_runs_within_shutdown_timeout_and_a_restart_finishes_them(tmp_path, notify_socket):
    setup = Setup(tmp_path, shutdown_timeout=2)
    inbox = setup.inbox()
    config = setup.write()
    path = Path(inbox["path"])
    inputs = {"long-a.bin": b"sleep=30\na\n", "long-b.bin": b"sleep=30\nb\n"}
    d = Daemon(config, env={"NOTIFY_SOCKET": notify_socket.address})
    with d:
        ready = notify_socket.wait_for("READY=1")
        for name, data in inputs.items():
            drop(path, name, data)
        for name in inputs:
            d.wait_event("entry.started", file=name)
        stopped_at = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.proc.wait(60) == 0
        took = time.monotonic() - stopped_at
        assert notify_socket.wait_for("STOPPING=1") > ready
        assert sorted(ev["file"] for ev in d.events("run.released")) == sorted(inputs)
        assert d.events("run.published") == [] and d.events("run.quarantined") == []
        wait_until(lambda: processes_with(d.marker) == [], 5)  # no module, worker or forkserver left
    assert took >= 2, (
        took
    )  # the runs had their shutdown_timeout before they were released (a lower bound holds under load)
    assert files(path) == sorted(inputs)  # back under their own names, unchanged
    for name, data in inputs.items():
        assert (path / name).read_bytes() == data
    assert nothing_claimed(path)
    assert files(inbox["outbox"]) == [] and files(inbox["quarantine"]) == []

    # Restarted (with the test module's sleeps capped), it processes them once.
    with Daemon(config, env={"CHUTE_TEST_SLEEP_MAX": "0.2"}, name="again") as again:
        wait_until(lambda: len(files(inbox["archive"])) == 2 and nothing_claimed(path), 30)
        assert again.stop() == 0
    assert_processed_once(inbox, inputs)


def test_a_clean_stop_leaves_nothing_of_the_daemon_in_work_dir(tmp_path):
    """Issue 19.7: a stopped daemon's `work_dir/<daemon>/.owner` was left behind, one folder per start."""
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    config = setup.write()
    work_dir = tmp_path / "chute-work"
    with Daemon(config) as d:
        [started] = d.wait_event("daemon.started")
        drop(Path(inbox["path"]), "clip.mov", b"clip\n")
        d.wait_event("run.published")
        assert (work_dir / started["daemon"] / ".owner").is_file()  # while it runs, its record says who it is
        assert d.stop() == 0
    assert list(work_dir.iterdir()) == []


def test_a_second_sigterm_stops_at_once_still_releasing(tmp_path, notify_socket):
    setup = Setup(tmp_path, shutdown_timeout=60)
    inbox = setup.inbox()
    config = setup.write()
    path = Path(inbox["path"])
    with Daemon(config, env={"NOTIFY_SOCKET": notify_socket.address}) as d:
        drop(path, "long.bin", b"sleep=30\n")
        d.wait_event("entry.started", file="long.bin")
        d.signal(signal.SIGTERM)
        d.wait_event("daemon.stopping")
        notify_socket.wait_for("STOPPING=1")
        d.signal(signal.SIGTERM)
        assert d.proc.wait(60) == 0
        # Released, not published: had it waited for the drain, the 30 s module would have finished.
        assert [ev["file"] for ev in d.events("run.released")] == ["long.bin"]
        assert d.events("run.published") == []
        wait_until(lambda: processes_with(d.marker) == [], 5)
    assert files(path) == ["long.bin"] and (path / "long.bin").read_bytes() == b"sleep=30\n"
    assert nothing_claimed(path)


# --- SIGHUP ---


def reload(d: Daemon, setup: Setup, n: int = 1) -> None:
    """Rewrite the config from `setup`, SIGHUP, and wait for the n-th daemon.reloaded."""
    setup.write()
    d.signal(signal.SIGHUP)
    d.wait_event("daemon.reloaded", count=n)


def test_sighup_adds_an_inbox(tmp_path, notify_socket):
    setup = Setup(tmp_path)
    first = setup.inbox("first")
    config = setup.write()
    with Daemon(config, env={"NOTIFY_SOCKET": notify_socket.address}) as d:
        notify_socket.wait_for("READY=1")
        second = setup.inbox("second")
        reload(d, setup)
        messages = notify_socket.messages()
        reloading = next(i for i, m in enumerate(messages) if "RELOADING=1" in m.splitlines())
        assert "READY=1" in messages[reloading + 1 :], "READY=1 must end the reload"
        drop(Path(second["path"]), "new.bin", b"new inbox\n")
        drop(Path(first["path"]), "old.bin", b"old inbox\n")
        wait_until(lambda: files(second["archive"]) and files(first["archive"]), 20)
        assert d.stop() == 0
    assert_processed_once(second, {"new.bin": b"new inbox\n"})
    assert_processed_once(first, {"old.bin": b"old inbox\n"})


def test_sighup_removing_an_inbox_lets_its_run_in_flight_finish_and_takes_nothing_new(tmp_path):
    setup = Setup(tmp_path)
    kept = setup.inbox("kept")
    gone = setup.inbox("gone")
    config = setup.write()
    with Daemon(config) as d:
        drop(Path(gone["path"]), "inflight.bin", b"sleep=1.5\n")
        d.wait_event("entry.started", file="inflight.bin")
        setup.config["inboxes"].remove(gone)
        reload(d, setup)
        assert d.wait_event("run.published", file="inflight.bin")
        # Dropped into the removed inbox first, then into the kept one: by the time the kept
        # one's file is out, the other would long have been claimed if it were still watched.
        drop(Path(gone["path"]), "late.bin", b"late\n")
        drop(Path(kept["path"]), "kept.bin", b"kept\n")
        wait_until(lambda: files(kept["archive"]), 20)
        assert d.stop() == 0
        assert [ev["file"] for ev in d.events("file.claimed", inbox=gone["path"])] == ["inflight.bin"]
    assert files(gone["path"]) == ["late.bin"]
    assert (Path(gone["path"]) / "late.bin").read_bytes() == b"late\n"
    assert files(gone["archive"]) == ["inflight.bin"] and files(gone["outbox"]) == ["inflight"]
    assert nothing_claimed(Path(gone["path"]))
    assert_processed_once(kept, {"kept.bin": b"kept\n"})


def test_sighup_with_a_changed_job_runs_new_files_with_it_and_the_run_in_flight_with_the_old(tmp_path):
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    config = setup.write()
    job_file = setup.defs / "jobs" / "twostep.yaml"
    with Daemon(config) as d:
        drop(Path(inbox["path"]), "old.bin", b"sleep=1.5\nold job\n")
        d.wait_event("entry.started", file="old.bin")
        job = json.loads(json.dumps(TWO_STEP_JOB))
        job["steps"][1]["entries"][0]["output_artifacts"][0]["name"] = "renamed.bin"
        job_file.write_text(yaml.safe_dump(job, sort_keys=False))
        d.signal(signal.SIGHUP)
        d.wait_event("daemon.reloaded")
        drop(Path(inbox["path"]), "new.bin", b"new job\n")
        wait_until(lambda: len(files(inbox["archive"])) == 2, 20)
        assert d.stop() == 0
    outbox = Path(inbox["outbox"])
    assert files(outbox) == ["new", "old"]
    assert files(outbox / "old") == ["manifest.json", "result.bin"]
    assert files(outbox / "new") == ["manifest.json", "renamed.bin"]
    assert (outbox / "new" / "renamed.bin").read_bytes() == b"new job\n"
    old = json.loads((outbox / "old" / "manifest.json").read_text())["job"]["sha256"]
    new = json.loads((outbox / "new" / "manifest.json").read_text())["job"]["sha256"]
    assert old != new


def test_sighup_with_a_broken_config_is_refused_and_the_old_one_keeps_working(tmp_path, notify_socket):
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    config = setup.write()
    with Daemon(config, env={"NOTIFY_SOCKET": notify_socket.address}) as d:
        notify_socket.wait_for("READY=1")
        setup.write(workers="many", no_such_key=1)
        d.signal(signal.SIGHUP)
        [failed] = d.wait_event("daemon.reload_failed")
        problems = failed["problems"]
        assert len(problems) == 2 and all("\n" not in p for p in problems)
        assert any("no_such_key" in p for p in problems) and any("workers" in p for p in problems)
        assert d.events("daemon.reloaded") == []
        messages = notify_socket.messages()
        reloading = next(i for i, m in enumerate(messages) if "RELOADING=1" in m.splitlines())
        assert "READY=1" in messages[reloading + 1 :], "a refused reload still ends with READY=1"
        drop(Path(inbox["path"]), "after.bin", b"after a bad reload\n")
        wait_until(lambda: files(inbox["archive"]), 20)
        assert d.stop() == 0
    assert_processed_once(inbox, {"after.bin": b"after a bad reload\n"})
