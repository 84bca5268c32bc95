"""`chute run` as a user runs it: files dropped into real folders, results read back (contract §4, §5, §7, §9).

Every test starts the daemon as a subprocess (tests/harness.py) on a two-step
"copy" job, drops files the way clients do (cp, chunked writers, rsync-style
temp names, a child process holding the file open), and waits on the ledger or
the log, never on a fixed sleep. Sleeps below are writers pausing, part of the
scenario.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import (
    CHUTE,
    Daemon,
    Setup,
    claimed_inputs,
    event_time,
    exact_name,
    files,
    ledger_runs,
    ledger_states,
    logged_name,
    max_overlap,
    run_intervals,
    sha256,
    status_json,
    wait_until,
)

SETTLE = 0.3  # the harness's defaults.settle


def start(tmp_path: Path, env: dict[str, str] | None = None, **inbox: object) -> tuple[Path, Daemon, Path]:
    """A config with one inbox `tmp_path/in` (extra inbox keys from `inbox`) and its daemon, not started."""
    setup = Setup(tmp_path)
    setup.inbox(**inbox)
    config = setup.write()
    return config, Daemon(config, env=env), tmp_path / "in"


def wait_finished(config: Path, n: int, state: str = "succeeded", timeout: float = 30.0) -> None:
    """Until the ledger holds `n` runs in `state` (recorded after the result and the archive are in place)."""
    wait_until(lambda: ledger_states(config).get(state, 0) >= n, timeout)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def claimed_names(d: Daemon) -> list[str]:
    return [ev["file"] for ev in d.events("file.claimed")]


def no_claims_left(inbox: Path) -> bool:
    root = inbox / ".chute" / "claimed"
    return not claimed_inputs(inbox) and not (root.exists() and any(root.glob("*/*")))


def assert_published(tmp_path: Path, name: str, data: bytes) -> None:
    """One result folder for `name` with result.bin == the input, the input archived unchanged."""
    result = tmp_path / "in-out" / Path(name).stem
    assert files(result) == ["manifest.json", "result.bin"], name
    assert (result / "result.bin").read_bytes() == data
    manifest = json.loads((result / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    assert exact_name(manifest["input"], "name") == name
    assert (tmp_path / "in-archive" / name).read_bytes() == data


# --- arriving files ---


def test_a_copied_file_is_published_archived_and_shown_by_status(tmp_path):
    config, daemon, inbox = start(tmp_path)
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"a clip\n" + os.urandom(64 * 1024))
    with daemon as d:
        shutil.copy(src, inbox / "clip.mp4")
        wait_finished(config, 1)
        subprocess.run(["cp", str(src), str(inbox / "second.mp4")], check=True)
        wait_finished(config, 2)
        assert files(tmp_path / "in-out") == ["clip", "second"]
        for name in ("clip.mp4", "second.mp4"):
            assert_published(tmp_path, name, src.read_bytes())
        assert files(inbox) == []
        assert no_claims_left(inbox)
        assert sorted(claimed_names(d)) == ["clip.mp4", "second.mp4"]
        status = status_json(config)
    assert status["counts"] == {"succeeded": 2}
    assert status["active"] == []
    by_name = {r["input_name"]: r for r in status["recent"]}
    assert by_name["clip.mp4"]["state"] == "succeeded"
    assert by_name["clip.mp4"]["sha256"] == sha256(src)
    assert by_name["clip.mp4"]["result"] == str(tmp_path / "in-out" / "clip")


def test_status_shows_where_a_run_is_executing(tmp_path):
    config, daemon, inbox = start(tmp_path)
    with daemon as d:
        (inbox / "long.bin").write_bytes(b"sleep=10\nlong\n")
        [started] = d.wait_event("run.started")
        [active] = status_json(config)["active"]
        text = subprocess.run([str(CHUTE), "status", "--config", str(config)], capture_output=True, text=True).stdout
    worker = active["worker"]
    host, _, name = worker.partition("/")
    assert active["state"] == "running" and host == socket.gethostname() and name.startswith("worker-")
    assert f"on {worker}" in text


def test_a_file_held_open_between_chunks_is_claimed_only_after_close(tmp_path):
    config, daemon, inbox = start(tmp_path)
    chunks = [f"chunk {i}\n".encode() * 2000 for i in range(4)]
    with daemon as d:
        with open(inbox / "slow.mov", "wb") as f:
            for i, chunk in enumerate(chunks):
                f.write(chunk)
                f.flush()
                if i < len(chunks) - 1:
                    time.sleep(2 * SETTLE)  # the writer pauses, file open, longer than settle
                    assert d.events("file.claimed") == [], "claimed while the writer still had it open"
        closed_at = time.time()
        wait_finished(config, 1)
        [claimed] = d.events("file.claimed")
    assert event_time(claimed) > closed_at
    assert sha256(tmp_path / "in-archive" / "slow.mov") == sha256_of(b"".join(chunks))
    assert_published(tmp_path, "slow.mov", b"".join(chunks))


WRITER = """
import sys, time
path, pause, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
with open(path, "wb") as f:
    for i in range(n):
        f.write(b"part %d\\n" % i * 3000)
        f.flush()
        if i < n - 1:
            time.sleep(pause)
print(repr(time.time()), flush=True)
"""


def test_a_file_held_open_by_another_process_is_claimed_only_after_close(tmp_path):
    config, daemon, inbox = start(tmp_path)
    with daemon as d:
        writer = subprocess.run(
            [sys.executable, "-c", WRITER, str(inbox / "other.mov"), str(2 * SETTLE), "4"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        closed_at = float(writer.stdout)
        wait_finished(config, 1)
        [claimed] = d.events("file.claimed")
    expected = b"".join(b"part %d\n" % i * 3000 for i in range(4))
    assert event_time(claimed) > closed_at
    assert sha256(tmp_path / "in-archive" / "other.mov") == sha256_of(expected)


UNSHARE = ("unshare", "--pid", "--fork", "--mount-proc")


def test_a_writer_the_daemon_cannot_see_in_proc_is_not_claimed_while_open(tmp_path):
    """Under systemd/chute.service (User=chute, ProtectProc=invisible) /proc hides smbd, nfsd or another
    user's rsync; inotify still sees their writes and the close (contract §5.2). Here the writer is hidden
    by running the daemon in a pid namespace of its own."""
    if not shutil.which("unshare") or subprocess.run([*UNSHARE, "true"], capture_output=True).returncode != 0:
        pytest.skip("hides the writer in a pid namespace, which `unshare` cannot create here (needs CAP_SYS_ADMIN)")
    setup = Setup(tmp_path)
    setup.inbox()
    config = setup.write()
    inbox = tmp_path / "in"
    with Daemon(config, wrap=UNSHARE) as d:
        with open(inbox / "hidden-writer.mov", "wb") as f:
            f.write(b"first half\n")
            f.flush()
            time.sleep(5 * SETTLE)  # the writer pauses, file open
            claimed_early = d.events("file.claimed")
            f.write(b"second half\n")
        wait_finished(config, 1)
    assert claimed_early == []
    assert (tmp_path / "in-out" / "hidden-writer" / "result.bin").read_bytes() == b"first half\nsecond half\n"


def test_an_rsync_style_temp_is_never_claimed_and_the_renamed_file_is_processed_once(tmp_path):
    config, daemon, inbox = start(tmp_path)
    data = b"rsync\n" + os.urandom(32 * 1024)
    temp = inbox / ".movie.mov.Xa81Qz"
    with daemon as d:
        with open(temp, "wb") as f:
            f.write(data[:1000])
            f.flush()
            d.wait_event("file.ignored", file=temp.name)  # the daemon has seen the temp
            time.sleep(2 * SETTLE)
            f.write(data[1000:])
        temp.rename(inbox / "movie.mov")
        wait_finished(config, 1)
        assert claimed_names(d) == ["movie.mov"]
        assert len(d.events("file.ignored", file=temp.name)) == 1
    assert_published(tmp_path, "movie.mov", data)


IGNORED = {
    ".hidden.mov": "hidden or temporary name",
    "~$lock.mov": "hidden or temporary name",
    "movie.mov.part": "partial download or temporary suffix",
    "movie.mov.PARTIAL": "partial download or temporary suffix",
    "movie.mov.tmp": "partial download or temporary suffix",
    "movie.mov.CrDownload": "partial download or temporary suffix",
    "movie.mov.download": "partial download or temporary suffix",
    "Thumbs.db": "system file",
    "desktop.ini": "system file",
    "DESKTOP.INI": "system file",
    "movie.NFO": "matches exclude",
    "skip-this.mov": "matches exclude",
    "notes.txt": "does not match include",
}


def test_every_ignore_rule_leaves_the_file_untouched_and_logs_it_once(tmp_path):
    config, daemon, inbox = start(
        tmp_path,
        include=["*.mov", "*.nfo", "*.db", "*.ini", "*.part*", "*.tmp", "*download"],
        exclude=["*.nfo", "SKIP-*"],
    )
    with daemon as d:
        for name in IGNORED:
            (inbox / name).write_bytes(name.encode())
        (inbox / "folder.mov").mkdir()
        (inbox / "folder.mov" / "inside.mov").write_bytes(b"inside")
        mtimes = {p.name: p.stat().st_mtime_ns for p in inbox.iterdir()}
        (inbox / "real.MOV").write_bytes(b"the barrier\n")  # matches include "*.mov": case-insensitive
        wait_finished(config, 1)
        assert claimed_names(d) == ["real.MOV"]
        ignored = d.events("file.ignored")
    for name, reason in IGNORED.items():
        assert (inbox / name).read_bytes() == name.encode()
        assert (inbox / name).stat().st_mtime_ns == mtimes[name], f"{name} was touched"
        logged = [ev for ev in ignored if ev["file"] == name]
        assert len(logged) == 1, f"{name}: {logged}"
        assert logged[0]["reason"] == reason, name
    assert (inbox / "folder.mov" / "inside.mov").read_bytes() == b"inside"
    assert [ev["reason"] for ev in ignored if ev["file"] == "folder.mov"] == ["a folder"]
    assert not any(ev["file"] == "inside.mov" for ev in ignored)
    assert sorted(files(inbox)) == sorted(n for n in [*IGNORED, "folder.mov"] if not n.startswith("."))
    assert files(tmp_path / "in-out") == ["real"]


HOSTILE = [
    "-rf --leading-dash.mov",
    "with  spaces .mov",
    "quotes 'single' \"double\".mov",
    "new\nline.mov",
    "$(touch pwned).mov",
    "`touch pwned`.mov",
    "; touch pwned #.mov",
    "café é.mov",
    "日本語のファイル.mov",
    os.fsdecode(b"latin-1 caf\xe9.mov"),  # not UTF-8: a legacy client's name, kept as its bytes
    "x" * 196 + ".mov",
]


def test_hostile_names_are_processed_once_under_their_own_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the daemon's working folder, where a `touch pwned` would land
    config, daemon, inbox = start(tmp_path)
    assert len(HOSTILE[-1]) == 200
    with daemon as d:
        for name in HOSTILE:
            (inbox / name).write_bytes(b"hostile\n" + os.fsencode(name))
        wait_finished(config, len(HOSTILE))
        assert sorted(claimed_names(d)) == sorted(logged_name(n) for n in HOSTILE)
        assert d.events("daemon.error") == []
        status = status_json(config)
    assert sorted(exact_name(r, "input_name") for r in status["recent"]) == sorted(HOSTILE)
    assert sorted(files(tmp_path / "in-out")) == sorted(Path(n).stem for n in HOSTILE)
    assert sorted(files(tmp_path / "in-archive")) == sorted(HOSTILE)
    for name in HOSTILE:
        assert_published(tmp_path, name, b"hostile\n" + os.fsencode(name))
    assert files(inbox) == []
    assert no_claims_left(inbox)
    assert not [p for p in tmp_path.rglob("*pwned*") if p.name == "pwned"]
    assert not Path("/pwned").exists() and not (Path.cwd() / "pwned").exists()


def test_a_symlink_is_quarantined_as_a_link_and_its_target_never_read(tmp_path):
    config, daemon, inbox = start(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.mov"
    secret.write_bytes(b"not for chute")
    secret.chmod(0o000)
    before = secret.stat()
    fifo = outside / "pipe"
    os.mkfifo(fifo)  # opening it to read would block the daemon: the barrier below proves it did not
    with daemon as d:
        (inbox / "link.mov").symlink_to(secret)
        (inbox / "pipe.mov").symlink_to(fifo)
        d.wait_event("file.rejected", count=2)
        (inbox / "after.mov").write_bytes(b"after the links\n")
        wait_finished(config, 1)
        # file.rejected is logged when a link is claimed, before its run quarantines it: under load the
        # file dropped after them can finish first, so wait for the two quarantined runs themselves.
        wait_finished(config, 2, state="failed")
        rejected = d.events("file.rejected")
        assert claimed_names(d) == ["after.mov"]
    assert sorted(ev["file"] for ev in rejected) == ["link.mov", "pipe.mov"]
    quarantine = tmp_path / "in-quarantine"
    assert files(quarantine) == ["link", "pipe"]
    for folder, name, target in (("link", "link.mov", secret), ("pipe", "pipe.mov", fifo)):
        moved = quarantine / folder / name
        assert moved.is_symlink() and os.readlink(moved) == str(target)
        report = json.loads((quarantine / folder / "report.json").read_text())
        assert report["status"] == "failed"
        assert "symbolic link" in report["error"]["reason"]
        assert report["input"]["name"] == name
    after = secret.stat()
    assert (after.st_mode, after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_mode,
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    secret.chmod(0o600)
    assert secret.read_bytes() == b"not for chute"
    assert fifo.is_fifo()
    assert files(inbox) == []


@pytest.mark.slow  # ~45 s: 200 runs of two module processes each on 2 workers
def test_200_files_at_once_are_each_processed_once_never_more_than_workers_at_a_time(tmp_path):
    trace = tmp_path / "trace"
    trace.mkdir()
    config, daemon, inbox = start(tmp_path, env={"CHUTE_TEST_TRACE": str(trace)})
    staging = tmp_path / "staging"
    staging.mkdir()
    names = [f"file-{i:03d}.mov" for i in range(200)]
    for name in names:
        (staging / name).write_bytes(name.encode() + b"\n")
    with daemon as d:
        for name in names:  # all at once: renames from the same filesystem
            os.rename(staging / name, inbox / name)
        wait_finished(config, 200, timeout=150)
        claimed = claimed_names(d)
        started = d.events("run.started")
    assert sorted(claimed) == names
    assert len(started) == 200
    assert files(tmp_path / "in-out") == [Path(n).stem for n in names]
    assert files(tmp_path / "in-archive") == names
    assert ledger_states(config) == {"succeeded": 200}
    assert files(inbox) == [] and no_claims_left(inbox)
    intervals = run_intervals(trace)
    assert len(intervals) == 200
    assert max_overlap(intervals) == 2  # workers: 2, and both used


# --- watching modes ---


def test_a_poll_inbox_processes_files(tmp_path):
    config, daemon, inbox = start(tmp_path, watch="poll")
    with daemon as d:
        [watching] = d.events("inbox.watching")
        assert watching["mode"] == "poll"
        (inbox / "polled.mov").write_bytes(b"polled\n")
        wait_finished(config, 1)
    assert_published(tmp_path, "polled.mov", b"polled\n")


def test_auto_watches_a_local_folder_with_events(tmp_path):
    config, daemon, inbox = start(tmp_path, watch="auto")
    with daemon as d:
        [watching] = d.events("inbox.watching")
        assert watching["mode"] == "events"
        assert watching["inbox"] == str(inbox)
        (inbox / "evented.mov").write_bytes(b"evented\n")
        wait_finished(config, 1)
    assert_published(tmp_path, "evented.mov", b"evented\n")


# --- retry ---


def retry(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHUTE), "retry", *args, "--config", str(config)], capture_output=True, text=True, timeout=60
    )


def test_retry_puts_quarantined_inputs_back_and_they_run_again(tmp_path):
    config, daemon, inbox = start(tmp_path)
    quarantine = tmp_path / "in-quarantine"
    with daemon as d:
        (inbox / "bad.mov").write_bytes(b"fail\n")
        wait_finished(config, 1, "failed")
        [first] = [r for r in ledger_runs(config) if r.state.value == "failed"]
        assert files(quarantine) == ["bad"]
        assert (quarantine / "bad" / "bad.mov").read_bytes() == b"fail\n"

        done = retry(config, first.run_id)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [f"{first.run_id}: {inbox / 'bad.mov'}"]
        wait_finished(config, 1, "retried")
        wait_until(lambda: len(files(quarantine)) == 2)
        wait_finished(config, 1, "failed")  # the second run of bad.mov, once it is recorded
        assert files(quarantine) == ["bad", "bad-2"]
        assert files(quarantine / "bad") == ["logs", "report.json"]  # its input went back, its report stays
        assert (quarantine / "bad-2" / "bad.mov").read_bytes() == b"fail\n"

        (inbox / "worse.mov").write_bytes(b"fail\n")
        wait_finished(config, 2, "failed")
        everything = retry(config, "--all")
        assert everything.returncode == 0, everything.stderr
        assert len(everything.stdout.splitlines()) == 2
        wait_finished(config, 3, "retried")
        wait_finished(config, 2, "failed")
        wait_until(lambda: len(files(quarantine)) == 5)
        claims = claimed_names(d)
    assert sorted(claims) == ["bad.mov"] * 3 + ["worse.mov"] * 2
    assert files(quarantine) == ["bad", "bad-2", "bad-3", "worse", "worse-2"]
    assert ledger_states(config) == {"retried": 3, "failed": 2}
    assert {r.run_id: r.state.value for r in ledger_runs(config)}[first.run_id] == "retried"

    nosuch = retry(config, "nosuch")
    assert nosuch.returncode == 1
    assert nosuch.stdout == ""
    assert len(nosuch.stderr.splitlines()) == 1 and "nosuch" in nosuch.stderr

    both = retry(config, first.run_id, "--all")
    assert both.returncode == 2 and len(both.stderr.splitlines()) == 1, both.stderr

    [last] = [r for r in ledger_runs(config) if r.state.value == "failed" and r.input_name == "bad.mov"]
    shutil.rmtree(inbox)  # the daemon has stopped: an inbox on a share that is not mounted now
    gone = retry(config, last.run_id)
    assert gone.returncode == 1
    assert len(gone.stderr.splitlines()) == 1 and "cannot move" in gone.stderr, gone.stderr
    assert (quarantine / "bad-3" / "bad.mov").read_bytes() == b"fail\n"
    assert {r.run_id: r.state.value for r in ledger_runs(config)}[last.run_id] == "failed"


# --- an inbox that goes away ---


def test_an_inbox_removed_while_running_pauses_and_resumes_when_it_returns(tmp_path):
    setup = Setup(tmp_path)
    setup.inbox()
    setup.inbox("other")
    config = setup.write()
    inbox, other = tmp_path / "in", tmp_path / "other"
    with Daemon(config) as d:
        (inbox / "before.mov").write_bytes(b"before\n")
        wait_finished(config, 1)
        shutil.rmtree(inbox)
        d.wait_event("inbox.unavailable", inbox=str(inbox))
        for n in range(3):  # work in the other inbox: the daemon keeps scanning both meanwhile
            (other / f"meanwhile-{n}.mov").write_bytes(b"meanwhile\n")
            wait_finished(config, 2 + n)
        assert not inbox.exists(), "the daemon recreated a vanished inbox"
        inbox.mkdir()
        d.wait_event("inbox.available", inbox=str(inbox))
        (inbox / "after.mov").write_bytes(b"after\n")
        wait_finished(config, 5)
        assert d.alive()
        assert len(d.events("inbox.unavailable", inbox=str(inbox))) == 1
        assert len(d.events("inbox.available", inbox=str(inbox))) == 1
        assert d.events("daemon.error") == []
        assert d.stop() == 0
    assert_published(tmp_path, "after.mov", b"after\n")
    assert files(inbox) == []
