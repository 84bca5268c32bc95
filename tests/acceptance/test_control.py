"""The control socket, pause and resume, one daemon per state_dir (contract §7, §11; issue 21).

Everything goes through the real `chute` command and a real daemon on real
folders. The test module sleeps as long as a dropped file's first line says
(tests/harness.py), so a drain of many files is slow enough to pause in.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

from chute.control import MAX_REQUEST
from chute.metrics_http import MAX_CONNECTIONS

from tests.harness import (
    CHUTE,
    Daemon,
    Setup,
    assert_processed_once,
    claimed_inputs,
    drop,
    files,
    ledger_runs,
    status_json,
    wait_until,
)


def chute(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHUTE), *args, "--config", str(config)], capture_output=True, text=True, timeout=timeout)


def runs_of(config: Path, inbox: dict) -> list:
    return [r for r in ledger_runs(config) if r.inbox == inbox["path"]]


def archived(inbox: dict, names: list[str]):
    return lambda: set(names) <= set(files(Path(inbox["archive"])))


def test_a_second_daemon_on_one_state_dir_exits_3_naming_the_first_and_a_killed_ones_lock_is_free(tmp_path):
    setup = Setup(tmp_path)
    setup.inbox()
    config = setup.write()
    state_dir = tmp_path / "chute-state"
    with Daemon(config) as first:
        second = chute(config, "run", timeout=60)
        assert second.returncode == 3, second
        assert second.stderr == f"chute: already running: pid {first.pid} holds {state_dir}\n"
        assert first.alive()
        first.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        first.proc.wait(10)  # type: ignore[union-attr]
        assert (state_dir / "control.sock").exists(), "a killed daemon leaves its socket"
        with Daemon(config, name="after") as after:  # the kernel dropped the lock; the stale socket is replaced
            assert chute(config, "status").returncode == 0
            assert chute(config, "pause").returncode == 0
            assert after.events("inbox.paused")
            assert after.stop() == 0
    assert not (state_dir / "control.sock").exists(), "a clean stop removes its socket"
    gone = chute(config, "resume")
    assert gone.returncode == 1
    assert gone.stderr == (f"chute: no daemon is running on {state_dir} (control.sock: No such file or directory)\n")


def test_pause_wait_during_a_drain_then_restart_and_resume_lose_nothing_and_run_nothing_twice(tmp_path):
    setup = Setup(tmp_path, metrics={"textfile": str(tmp_path / "chute.prom")})
    a = setup.inbox("a")
    b = setup.inbox("b")
    config = setup.write()
    inputs = {f"f{i:02d}.bin": f"sleep=0.2\nfile {i}\n".encode() for i in range(40)}
    with Daemon(config) as d:
        for name, data in inputs.items():
            drop(Path(a["path"]), name, data)
        wait_until(lambda: len(files(Path(a["archive"]))) >= 4, 60)
        # What runs as the pause comes: read just before it and just after (a run of 0.2 s may end
        # while the command starts on a loaded machine); every one of them must finish or go back.
        in_flight = {r.run_id for r in runs_of(config, a) if r.state.value in ("running", "queued")}
        paused = chute(config, "pause", "a")  # as configured: relative to the config file's folder
        assert paused.returncode == 0, paused
        assert paused.stdout.startswith(f"paused    {a['path']}")
        in_flight |= {r.run_id for r in runs_of(config, a) if r.state.value in ("running", "queued")}
        drained = chute(config, "pause", a["path"], "--wait")
        assert drained.returncode == 0, drained
        assert "(already paused)" in drained.stdout and drained.stdout.endswith(
            "drained: nothing runs in the paused inboxes\n"
        )
        at_pause = runs_of(config, a)
        assert not [r for r in at_pause if r.state.value in ("running", "queued")]
        assert not claimed_inputs(Path(a["path"]))
        left = files(Path(a["path"]))
        assert left and len(left) + len(files(Path(a["archive"]))) == 40
        # The other inbox keeps flowing; a file claimed there after the pause proves the loop looked since.
        drop(Path(b["path"]), "b1.bin", b"b1\n")
        wait_until(archived(b, ["b1.bin"]), 30)
        assert {r.run_id for r in runs_of(config, a)} == {r.run_id for r in at_pause}, "a paused inbox claimed"
        assert files(Path(a["path"])) == left
        assert status_json(config)["paused"] == [a["path"]]
        assert f"paused: {a['path']}" in chute(config, "status").stdout
        wait_until(lambda: f'chute_inbox_paused{{inbox="{a["path"]}"}} 1.0' in _read(tmp_path / "chute.prom"), 30)
        assert d.stop() == 0
    with Daemon(config, name="restarted") as d2:  # still paused after a restart
        assert d2.events("control.listening")[0]["paused"] == [a["path"]]
        drop(Path(b["path"]), "b2.bin", b"b2\n")
        wait_until(archived(b, ["b2.bin"]), 30)
        assert {r.run_id for r in runs_of(config, a)} == {r.run_id for r in at_pause}, "claimed after a restart"
        assert files(Path(a["path"])) == left
        resumed = chute(config, "resume", a["path"])
        assert resumed.returncode == 0 and resumed.stdout.startswith(f"claiming  {a['path']}"), resumed
        wait_until(lambda: len(files(Path(a["archive"]))) == 40 and not claimed_inputs(Path(a["path"])), 120)
        assert [e["inbox"] for e in d2.events("inbox.resumed", by="cli")] == [a["path"]]
        assert d2.stop() == 0
    assert_processed_once(a, inputs)
    succeeded = [r for r in runs_of(config, a) if r.state.value == "succeeded"]
    assert sorted(r.input_name for r in succeeded) == sorted(inputs), "an input run twice, or not at all"
    states = {r.run_id: r.state.value for r in runs_of(config, a)}
    assert in_flight and all(states[run_id] in ("succeeded", "released") for run_id in in_flight)
    running_at_pause = [run_id for run_id in in_flight if states[run_id] == "succeeded"]
    assert running_at_pause, "the runs in flight at the pause finished"
    assert status_json(config)["paused"] == []


def test_pause_and_resume_name_inboxes_the_daemon_has(tmp_path):
    setup = Setup(tmp_path)
    a = setup.inbox("media")
    config = setup.write()
    with Daemon(config):
        typo = chute(config, "pause", str(tmp_path / "medai"))
        assert typo.returncode == 1
        assert typo.stderr == (f"chute: no inbox '{tmp_path / 'medai'}' in {config} (did you mean '{a['path']}'?)\n")
        assert "Traceback" not in typo.stderr


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _ask(path: Path, data: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return json.loads(answer)


def test_nothing_a_control_client_does_costs_the_daemon_its_descriptors_threads_or_files(tmp_path):
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    config = setup.write()
    sock = tmp_path / "chute-state" / "control.sock"
    with Daemon(config) as d:
        assert oct(sock.stat().st_mode & 0o777) == "0o660"
        assert _ask(sock, b'{"op": "status"}\n')["ok"]
        fds, threads = len(os.listdir(f"/proc/{d.pid}/fd")), len(os.listdir(f"/proc/{d.pid}/task"))
        assert _ask(sock, b"not json\n") == {"ok": False, "error": "not a JSON object on one line"}
        assert _ask(sock, b"[1, 2]\n")["ok"] is False
        unknown = _ask(sock, b'{"op": "pase"}\n')
        assert unknown["ok"] is False and "did you mean 'pause'" in unknown["error"]
        assert _ask(sock, b'{"op": "pause", "inboxes": "all"}\n')["ok"] is False
        assert "too large" in _ask(sock, b"x" * (MAX_REQUEST + 10))["error"]
        clients = []
        try:
            for _ in range(200):  # idle ones, and ones that send half a line and stall
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.connect(str(sock))
                clients.append(c)
            clients[-1].sendall(b'{"op": "sta')
            for _ in range(20):  # ones that ask and never read their answers
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.connect(str(sock))
                c.sendall(b'{"op": "status"}\n')
                clients.append(c)
            # The CLI still gets through, and files still flow.
            assert chute(config, "pause").returncode == 0
            assert chute(config, "resume").returncode == 0
            drop(Path(inbox["path"]), "f.bin", b"f\n")
            wait_until(archived(inbox, ["f.bin"]), 30)
            assert len(os.listdir(f"/proc/{d.pid}/fd")) <= fds + MAX_CONNECTIONS
            assert len(os.listdir(f"/proc/{d.pid}/task")) == threads
        finally:
            for c in clients:
                c.close()
        assert d.alive()
        assert d.stop() == 0


def test_systemd_status_says_how_many_inboxes_are_paused(tmp_path):
    setup = Setup(tmp_path)
    setup.inbox("a")
    setup.inbox("b")
    config = setup.write()
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # a real NOTIFY_SOCKET, as systemd's
    receiver.bind(str(tmp_path / "notify"))
    receiver.settimeout(30)
    with receiver, Daemon(config, env={"NOTIFY_SOCKET": str(tmp_path / "notify")}) as d:
        assert chute(config, "pause").returncode == 0
        seen: list[bytes] = []
        wait_until(lambda: seen.append(receiver.recv(4096)) or b"; paused: 2 inboxes" in seen[-1], 30)
        assert chute(config, "resume", "b").returncode == 0
        wait_until(lambda: seen.append(receiver.recv(4096)) or seen[-1].endswith(b"failed; paused: 1 inbox"), 30)
        assert d.stop() == 0
