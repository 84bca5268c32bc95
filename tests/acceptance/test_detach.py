"""`chute run --detach` on a host without systemd: a background daemon with a pidfile and a log file.

A detached daemon is nobody's child: python-daemon forks twice and the daemon is
re-parented. The test process makes itself the "child subreaper" of what it
starts (prctl(2) PR_SET_CHILD_SUBREAPER), so the daemon is re-parented to the test
and can be waited for, exit code and all, instead of to an init that may never
reap it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from chute.entry import sweep

from tests.dask_cluster import free_port
from tests.harness import CHUTE, Setup, drop, files, wait_until

PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        pytest.skip(
            "this test adopts the detached daemon to see it exit, and the kernel refused to make it a "
            f"subreaper (prctl PR_SET_CHILD_SUBREAPER: {os.strerror(ctypes.get_errno())})"
        )


def state(pid: int) -> str | None:
    """The process's state letter ("S", "R", "Z" ...), or None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def my_children() -> set[int]:
    out = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            out |= {int(p) for p in (task / "children").read_text().split()}
        except FileNotFoundError:
            pass
    return out


def running_with(marker: str) -> list[int]:
    """Live (not zombie) processes whose environment carries `marker`."""
    needle = marker.encode() + b"\0"
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            env = Path(f"/proc/{name}/environ").read_bytes()
        except OSError:
            continue
        if (env.startswith(needle) or b"\0" + needle in env) and state(int(name)) not in (None, "Z"):
            found.append(int(name))
    return found


class Detached:
    """Runs `chute run --detach ...` in `cwd` with a marker in the environment, and waits for detached pids."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.marker = f"CHUTE_TEST_DAEMON={uuid.uuid4().hex}"
        self.env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
        self.env["CHUTE_TEST_DAEMON"] = self.marker.split("=", 1)[1]
        self.exit_codes: dict[int, int] = {}

    def chute(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CHUTE), *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )

    def reap(self) -> None:
        """Collect every adopted child that has exited (the daemon, its orphaned helpers)."""
        for pid in my_children():
            if state(pid) == "Z":
                _, status = os.waitpid(pid, 0)
                self.exit_codes[pid] = os.waitstatus_to_exitcode(status)

    def exit_code(self, pid: int, timeout: float = 20) -> int:
        """Wait for the (adopted) detached process `pid` to exit; its exit code."""

        def exited():
            self.reap()
            return pid in self.exit_codes

        wait_until(exited, timeout)
        return self.exit_codes[pid]

    def running(self) -> list[int]:
        return running_with(self.marker)


@pytest.fixture
def detached(tmp_path):
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    runner = Detached(tmp_path)
    try:
        yield runner
    finally:
        sweep(runner.marker)
        _prctl(PR_SET_CHILD_SUBREAPER, 0)
        wait_until(lambda: not runner.running(), timeout=10)
        # Orphans of what was swept were adopted by this process: collect them too.
        wait_until(lambda: (runner.reap(), not [p for p in my_children() if state(p) == "Z"])[1], timeout=10)


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_detach_run_refuse_stop(tmp_path, detached):
    """Returns at once; the daemon works in the background; a second start refuses; SIGTERM stops it cleanly."""
    setup = Setup(tmp_path)
    entry = setup.inbox()
    setup.write()
    pidfile, log_file = tmp_path / "chute.pid", tmp_path / "chute.log"
    # Relative paths: the daemon keeps the working directory it was started in.
    args = ("run", "--detach", "--pidfile", "chute.pid", "--log-file", "chute.log", "--config", "chute.yaml")

    first = detached.chute(*args)  # returns while the daemon goes on (asserted below), not when it ends
    assert first.returncode == 0, first.stderr
    pid = int(pidfile.read_text())
    assert first.stdout.splitlines() == [f"chute: running as pid {pid}, logging to chute.log"]
    assert state(pid) not in (None, "Z")
    assert os.getsid(pid) != os.getsid(0)  # its own session: closing the terminal does not stop it
    assert os.readlink(f"/proc/{pid}/cwd") == str(tmp_path)
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    assert int(status["Umask"], 8) == umask()

    drop(Path(entry["path"]), "clip.bin", b"data\n")
    wait_until(lambda: files(Path(entry["outbox"])) == ["clip"])
    published = Path(entry["outbox"]) / "clip"
    assert published.stat().st_mode & 0o777 == 0o777 & ~umask()  # the user's umask, not python-daemon's 0
    # The folder appears in the outbox a moment before the daemon logs that it did.
    wait_until(lambda: '"event": "run.published"' in log_file.read_text())
    log = log_file.read_text()
    for name in ("daemon.started", "file.claimed", "run.started", "run.published"):
        assert f'"event": "{name}"' in log, name
    assert '"file": "clip.bin"' in log

    second = detached.chute(*args)
    assert second.returncode == 3
    assert second.stderr.splitlines() == [f"chute: already running as pid {pid} (pidfile {pidfile})"]
    assert second.stdout == ""
    assert int(pidfile.read_text()) == pid and state(pid) not in (None, "Z")

    os.kill(pid, signal.SIGTERM)
    assert detached.exit_code(pid) == 0
    assert not pidfile.exists()
    wait_until(lambda: not detached.running())  # its pool workers and modules are gone too
    assert '"event": "daemon.stopped"' in log_file.read_text().splitlines()[-1]


def test_stale_pidfile_is_taken(tmp_path, detached):
    """A pidfile left by a daemon that died (here: a pid nobody has) is replaced."""
    setup = Setup(tmp_path)
    setup.inbox()
    config = setup.write()
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile = tmp_path / "chute.pid"
    pidfile.write_text(f"{dead.pid}\n")

    result = detached.chute(
        "run", "--detach", "--pidfile", str(pidfile), "--log-file", str(tmp_path / "chute.log"), "--config", str(config)
    )
    assert result.returncode == 0, result.stderr
    pid = int(pidfile.read_text())
    assert pid != dead.pid and state(pid) not in (None, "Z")
    os.kill(pid, signal.SIGTERM)
    assert detached.exit_code(pid) == 0
    assert not pidfile.exists()


@pytest.mark.parametrize("missing", ["--pidfile", "--log-file"])
def test_detach_needs_pidfile_and_log_file(tmp_path, detached, missing):
    setup = Setup(tmp_path)
    setup.inbox()
    setup.write()
    args = {"--pidfile": "chute.pid", "--log-file": "chute.log"}
    del args[missing]
    result = detached.chute("run", "--detach", *[x for kv in args.items() for x in kv], "--config", "chute.yaml")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and missing in result.stderr
    assert not (tmp_path / "chute.pid").exists()
    assert detached.running() == []


def test_no_detach_under_systemd(tmp_path, detached):
    """Started by a Type=notify unit: refused, since systemd would wait for a READY=1 that never comes."""
    setup = Setup(tmp_path)
    setup.inbox()
    setup.write()
    detached.env["NOTIFY_SOCKET"] = str(tmp_path / "notify.sock")
    result = detached.chute(
        "run", "--detach", "--pidfile", "chute.pid", "--log-file", "chute.log", "--config", "chute.yaml"
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "chute: --detach is for hosts without systemd; under systemd run `chute run` in the foreground"
    ]
    assert not (tmp_path / "chute.pid").exists()


def test_failure_while_starting_is_the_commands(tmp_path, detached):
    """What stops the daemon from starting is the command's one-line error and exit code; no pidfile stays."""
    port = free_port()
    setup = Setup(tmp_path, executor={"kind": "dask", "address": f"tcp://127.0.0.1:{port}", "connect_timeout": 1})
    setup.inbox()
    setup.write()
    result = detached.chute(
        "run", "--detach", "--pidfile", "chute.pid", "--log-file", "chute.log", "--config", "chute.yaml"
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"chute: cannot reach the Dask scheduler at tcp://127.0.0.1:{port} (executor.address) within 1 s"
    ]
    assert not (tmp_path / "chute.pid").exists()
    wait_until(lambda: not detached.running())
