"""A crash, a full disk or a missing share never costs a good file (issue #10's findings, one test each).

Each test drives `chute run` as a subprocess on real folders, real mounts
(tmpfs, bind mounts: we are root) and real signals, and checks what a user
would see: where every input ended up, and that nothing was quarantined that
was not the file's fault.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from chute.ledger import FILE, Ledger

from tests.harness import (
    CHUTE,
    Daemon,
    Setup,
    assert_processed_once,
    claimed_inputs,
    drop,
    files,
    ledger_runs,
    processes_with,
    status_json,
    wait_until,
)
from tests.pipelines import proc_alive

pytestmark = pytest.mark.timeout(180)


def mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here (needs root): {proc.stderr.strip()}")


def umount(where: Path) -> None:
    if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


# --- 1. nothing of a killed daemon keeps running its runs ---


def test_kill_9_of_the_daemon_alone_leaves_no_worker_launcher_or_module_and_costs_no_file(tmp_path):
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    config = setup.write()
    path = Path(inbox["path"])
    path.mkdir()
    inputs = {f"slow-{i}.bin": f"sleep=4\nslow {i}\n".encode() for i in range(2)}
    with Daemon(config, name="first") as d:
        for name, data in inputs.items():
            drop(path, name, data)
        started = d.wait_event("entry.started", count=2)
        modules = [ev["pid"] for ev in started]
        workers = {p for p in processes_with(d.marker) if parent_of(p) == d.pid}
        assert len(workers) == 2
        os.kill(d.pid, signal.SIGKILL)  # the daemon process alone, not its group
        d.proc.wait(10)
        # Workers, their launchers and the modules die with it (PR_SET_PDEATHSIG, end of file).
        wait_until(lambda: processes_with(d.marker) == [], 10)
        assert not any(proc_alive(pid) for pid in modules + list(workers))
    with Daemon(config, name="second", env={"CHUTE_TEST_SLEEP_MAX": "0.2"}) as d:
        wait_until(lambda: len(files(Path(inbox["archive"]))) == 2, 60)
        assert len(d.events("run.taken_over")) == 2
        assert d.stop() == 0
    assert_processed_once(inbox, inputs)
    assert not [r for r in ledger_runs(config) if r.state.value in ("queued", "running")]


def test_a_frozen_daemon_that_resumes_never_removes_the_workspace_of_the_daemon_that_took_over(tmp_path):
    """Both daemons share one work_dir: every attempt has a workspace of its own; each owner removes only its own."""
    setup = Setup(tmp_path, lease_timeout=2)
    inbox = setup.inbox()
    work = tmp_path / "shared-work"
    a_config, b_config = setup.write("a", work_dir=str(work)), setup.write("b", work_dir=str(work))
    path = Path(inbox["path"])
    path.mkdir()
    inputs = {f"slow-{i}.bin": f"sleep=5\nslow {i}\n".encode() for i in range(2)}
    a, b = Daemon(a_config, name="a"), Daemon(b_config, name="b")
    with a:
        for name, data in inputs.items():
            drop(path, name, data)
        a.wait_event("entry.started", count=2)
        with b:
            a.signal(signal.SIGSTOP)
            b.wait_event("run.taken_over", count=2, timeout=30)
            a.signal(signal.SIGCONT)  # its workers finish their (lost) runs meanwhile: they must not harm b's
            wait_until(lambda: len(files(Path(inbox["archive"]))) == 2, 60)
            assert a.stop() == 0 and b.stop() == 0
    assert a.events("run.quarantined") == [] and b.events("run.quarantined") == []
    assert_processed_once(inbox, inputs)


# --- 2. a delivery never creates a configured root ---


def test_an_unmounted_outbox_share_defers_delivery_and_never_publishes_on_the_bare_mount_point(tmp_path):
    real, share = tmp_path / "server", tmp_path / "share"
    for folder in (real / "outbox", share):
        folder.mkdir(parents=True)
    mount("--bind", str(real), str(share))
    try:
        setup = Setup(tmp_path)
        inbox = setup.inbox(outbox=str(share / "outbox"))
        config = setup.write()
        path = Path(inbox["path"])
        path.mkdir()
        with Daemon(config) as d:
            drop(path, "clip.bin", b"sleep=2\nclip\n")
            d.wait_event("entry.started")
            umount(share)  # the share goes away while the run is under way
            deferred = d.wait_event("run.deferred", timeout=30)
            assert deferred[0]["fault"] == "outage"
            assert list(share.iterdir()) == []  # nothing created on the bare mount point
            assert d.events("run.published") == [] and files(Path(inbox["archive"])) == []
            assert [p.name for p in claimed_inputs(path)] == ["clip.bin"]  # still claimed, whole
            mount("--bind", str(real), str(share))
            d.wait_event("run.published", timeout=60)
            assert d.stop() == 0
        assert files(real / "outbox") == ["clip"]
        assert files(Path(inbox["archive"])) == ["clip.bin"]
    finally:
        umount(share)


def test_an_inbox_that_cannot_be_created_at_start_waits_and_is_watched_once_it_is_there(tmp_path):
    """A share not mounted at boot, under which chute may not create the inbox: the daemon starts,
    says the inbox is unavailable, and takes files from it (with inotify) once it is there."""
    share = tmp_path / "share"
    share.write_text("not a folder yet\n")  # mkdir of share/in fails, as under a root-owned mount point
    setup = Setup(tmp_path)
    inbox = setup.inbox(path=str(share / "in"), watch="events")
    config = setup.write()
    with Daemon(config) as d:
        d.wait_event("daemon.started")
        assert [e["inbox"] for e in d.events("inbox.unavailable")][:1] == [str(share / "in")]
        share.unlink()
        (share / "in").mkdir(parents=True)
        d.wait_event("inbox.available", timeout=90)
        drop(share / "in", "late.bin", b"late\n")
        wait_until(lambda: files(Path(inbox["archive"])) == ["late.bin"], 30)
        assert d.stop() == 0
    assert files(Path(inbox["outbox"])) == ["late"]


# --- 3. a full work_dir is the machine's fault, not the files' ---


def test_a_full_work_dir_defers_runs_and_quarantines_nothing(tmp_path, tmpfs):
    work = tmpfs("3m")
    setup = Setup(tmp_path, work_reserve_mb=0)
    inbox = setup.inbox()
    config = setup.write(work_dir=str(work))
    path = Path(inbox["path"])
    path.mkdir()
    # 2 MiB each: the input fits in work_dir, the first module's copy of it does not.
    inputs = {f"big-{i}.bin": b"big\n" + os.urandom(2 << 20) for i in range(5)}
    with Daemon(config) as d:
        for name, data in inputs.items():
            drop(path, name, data)
        deferred = d.wait_event("run.deferred", count=5, timeout=60)
        assert {ev["fault"] for ev in deferred} == {"machine"}
        assert d.events("run.quarantined") == [] and files(Path(inbox["quarantine"])) == []
        # `chute status` says why they wait.
        waiting = [r for r in status_json(config)["active"] if r["state"] == "queued"]
        assert waiting and all(r["error"]["reason"].startswith("waiting (machine): ") for r in waiting)
        subprocess.run(["mount", "-o", "remount,size=64m", str(work)], check=True)  # the operator makes room
        wait_until(lambda: len(files(Path(inbox["archive"]))) == 5, 120)
        assert d.stop() == 0
    assert d.events("run.quarantined") == []
    assert_processed_once(inbox, inputs)


def test_no_file_is_claimed_while_work_dir_is_below_its_reserve(tmp_path, tmpfs):
    work = tmpfs("4m")
    setup = Setup(tmp_path, work_reserve_mb=8)  # more than the whole work_dir
    inbox = setup.inbox()
    config = setup.write(work_dir=str(work))
    path = Path(inbox["path"])
    path.mkdir()
    with Daemon(config) as d:
        drop(path, "waits.bin", b"waits\n")
        time.sleep(2)  # the scenario: several scans with the file settled and work_dir short
        assert d.events("file.claimed") == [] and files(path) == ["waits.bin"]
        subprocess.run(["mount", "-o", "remount,size=64m", str(work)], check=True)
        wait_until(lambda: files(Path(inbox["archive"])) == ["waits.bin"], 30)
        assert d.stop() == 0


# --- 4. a stop with a stuck worker still ends ---


def test_a_stop_with_a_stuck_worker_ends_and_the_next_start_finishes_the_file(tmp_path):
    setup = Setup(tmp_path, shutdown_timeout=0)
    inbox = setup.inbox()
    config = setup.write()
    path = Path(inbox["path"])
    path.mkdir()
    with Daemon(config, name="stuck") as d:
        drop(path, "clip.bin", b"sleep=3\nclip\n")
        [started] = d.wait_event("entry.started")
        worker = started["pid"]
        while parent_of(worker) != d.pid:
            worker = parent_of(worker)
        os.kill(worker, signal.SIGSTOP)  # it will never answer the cancel: the daemon kills it (issue 19)
        d.signal(signal.SIGTERM)
        assert d.proc.wait(60) == 0  # it ends: the frozen worker is killed, not waited for
        assert d.events("executor.worker_frozen") and d.events("daemon.error") == []
        wait_until(lambda: processes_with(d.marker) == [], 10)
    with Daemon(config, name="after", env={"CHUTE_TEST_SLEEP_MAX": "0.2"}) as d:
        wait_until(lambda: files(Path(inbox["archive"])) == ["clip.bin"], 60)
        assert d.stop() == 0
    assert_processed_once(inbox, {"clip.bin": b"sleep=3\nclip\n"})


# --- 5. an unreadable input is the file's problem, quarantined at once ---


def test_an_unreadable_file_is_quarantined_with_the_reason_and_never_blocks_the_inbox(tmp_path):
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    config = setup.write()
    path = Path(inbox["path"])
    path.mkdir()
    locked = drop(path, "locked.bin", b"secret\n")
    locked.chmod(0o000)
    # As a daemon without CAP_DAC_OVERRIDE (root here has it, the `chute` user of the unit does not).
    no_override = (
        "setpriv",
        "--inh-caps=-dac_override,-dac_read_search",
        "--bounding-set=-dac_override,-dac_read_search",
        "--",
    )
    with Daemon(config, wrap=no_override) as d:
        [q] = d.wait_event("run.quarantined", timeout=30)
        drop(path, "good.bin", b"good\n")
        wait_until(lambda: files(Path(inbox["archive"])) == ["good.bin"], 30)
        assert d.events("run.deferred") == []
        assert d.stop() == 0
    assert q["file"] == "locked.bin" and "Permission denied" in q["reason"]
    quarantined = Path(inbox["quarantine"]) / "locked"
    assert sorted(files(quarantined)) == ["locked.bin", "report.json"]
    (quarantined / "locked.bin").chmod(0o600)
    assert (quarantined / "locked.bin").read_bytes() == b"secret\n"
    report = json.loads((quarantined / "report.json").read_text())
    assert report["error"]["reason"].startswith("chute cannot read the file")


def test_a_file_another_user_dropped_is_run_from_a_copy_and_keeps_its_owner_and_mode(tmp_path):
    """A group inbox: the daemon (here without CAP_DAC_OVERRIDE and CAP_FOWNER, as the unit's `chute`
    user) may read the file but not change its mode or link it, so it is staged by copy, never quarantined."""
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    config = setup.write()
    path = Path(inbox["path"])
    path.mkdir()
    theirs = drop(path, "theirs.bin", b"dropped by someone else\n")
    os.chown(theirs, 4321, 4321)
    theirs.chmod(0o644)
    not_owner = (
        "setpriv",
        "--inh-caps=-dac_override,-dac_read_search,-fowner",
        "--bounding-set=-dac_override,-dac_read_search,-fowner",
        "--",
    )
    with Daemon(config, wrap=not_owner) as d:
        wait_until(lambda: files(Path(inbox["archive"])) == ["theirs.bin"], 30)
        assert d.events("run.quarantined") == [] and d.events("run.deferred") == []
        assert d.stop() == 0
    assert files(Path(inbox["outbox"]) / "theirs") != []
    archived = Path(inbox["archive"]) / "theirs.bin"
    st = archived.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (4321, 0o644)
    assert archived.read_bytes() == b"dropped by someone else\n"


# --- 6 and 8. one folder under two names is one folder ---


def test_two_inboxes_on_one_folder_through_a_symlink_are_refused_by_check(tmp_path):
    setup = Setup(tmp_path)
    real = tmp_path / "in"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    setup.inbox("in")
    setup.inbox("alias")
    config = setup.write()
    proc = subprocess.run([str(CHUTE), "check", "--config", str(config)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "inboxes[0] already watches" in proc.stderr, proc.stderr


def test_an_inbox_configured_through_a_symlink_gets_inotify_events(tmp_path):
    # A backstop scan an hour away: a file claimed within a minute was seen through inotify.
    setup = Setup(tmp_path, defaults={"settle": 0.3, "poll_interval": 3600, "timeout": 60})
    real = tmp_path / "real-inbox"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real)
    inbox = setup.inbox("linked", watch="events")
    config = setup.write()
    with Daemon(config) as d:
        [watching] = d.events("inbox.watching")
        assert watching["mode"] == "events" and watching["inbox"] == str(real)
        drop(real, "clip.bin", b"clip\n")
        d.wait_event("file.claimed", timeout=60)
        wait_until(lambda: files(Path(inbox["archive"])) == ["clip.bin"], 30)
        assert d.stop() == 0


# --- 7. the ledger squares with the disk after a kill ---


def test_rows_a_killed_daemon_left_running_are_reconciled_at_the_next_start(tmp_path):
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    config = setup.write()
    path = Path(inbox["path"])
    path.mkdir()
    with Daemon(config, name="first") as d:
        drop(path, "slow.bin", b"sleep=30\nslow\n")
        d.wait_event("entry.started")
        d.kill()
    # Killed mid-run; meanwhile another daemon took the file and delivered it.
    [claim] = claimed_inputs(path)
    (Path(inbox["outbox"]) / "slow").mkdir(parents=True)
    run_id = claim.parent.name
    (Path(inbox["outbox"]) / "slow" / "manifest.json").write_text(json.dumps({"run_id": run_id}))
    claim.rename(Path(inbox["archive"]) / "slow.bin")
    shutil.rmtree(claim.parent)  # its markers with it
    with Daemon(config, name="second") as d:
        [reconciled] = d.wait_event("run.reconciled")
        assert d.stop() == 0
    assert (reconciled["run_id"], reconciled["state"]) == (run_id, "succeeded")
    ledger = Ledger(tmp_path / "chute-state", readonly=True)
    try:
        assert ledger.active() == []
        assert ledger.get(run_id).result == str(Path(inbox["outbox"]) / "slow")
    finally:
        ledger.close()
    assert (tmp_path / "chute-state" / FILE).exists()
