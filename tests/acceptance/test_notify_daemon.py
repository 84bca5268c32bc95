"""What systemd hears from `chute run` over a real NOTIFY_SOCKET, one daemon lifetime at a time (contract §8).

The socket is a real AF_UNIX datagram socket bound by the test, as systemd binds
its own: by path, and in the abstract namespace ("@name"). A thread reads the
datagrams as they come and notes when each arrived and how long the daemon's log
was at that instant, so the order of datagrams and log events can be checked.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import Daemon, Setup, bind_notify_socket, claimed_inputs, drop, files, state_dir_of, wait_until

WATCHDOG_USEC = 400_000  # pings expected every 0.2 s
PING = WATCHDOG_USEC / 2 / 1e6


@dataclass(frozen=True)
class Datagram:
    at: float  # time.monotonic() when it arrived
    text: str
    log_size: int  # bytes in the daemon's log when it arrived

    @property
    def fields(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.text.splitlines())


class Systemd:
    """The receiving end of $NOTIFY_SOCKET: collects every datagram the daemon sends."""

    def __init__(self, receiver: socket.socket, address: str):
        self.address = address
        self.receiver = receiver
        self.log_path: Path | None = None
        self.got: list[Datagram] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self.receiver.settimeout(0.05)
        while not self._stop.is_set():
            try:
                data = self.receiver.recv(4096)
            except TimeoutError:
                continue
            size = self.log_path.stat().st_size if self.log_path and self.log_path.exists() else 0
            self.got.append(Datagram(time.monotonic(), data.decode(), size))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.receiver.close()

    def all(self, text: str | None = None, since: float = 0.0) -> list[Datagram]:
        """Datagrams that arrived at or after `since`, matching `text` if given (see `_matches`)."""
        return [d for d in list(self.got) if d.at >= since and (text is None or _matches(d, text))]

    def wait(self, text: str, since: float = 0.0, timeout: float = 15.0) -> Datagram:
        """The first datagram matching `text` that arrived at or after `since`."""

        def arrived():
            found = self.all(text, since)
            return found[0] if found else None

        arrived.__name__ = f"datagram {text!r}"
        return wait_until(arrived, timeout)

    def pings(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [d.at for d in self.all("WATCHDOG=1", since) if d.at <= until]


def _matches(d: Datagram, text: str) -> bool:
    # "READY=1" matches that datagram exactly; "RELOADING=1" also a datagram that
    # carries more lines (MONOTONIC_USEC=); "STATUS" or "EXTEND_TIMEOUT_USEC" any value.
    if "=" in text:
        return text in d.text.splitlines()
    return text in d.fields


@pytest.fixture(params=["path", "abstract"])
def systemd(request, tmp_path):
    listener = Systemd(*bind_notify_socket(request.param, tmp_path))
    yield listener
    listener.close()


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def events_in(text: str, name: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("event") == name:
            out.append(ev)
    return out


def test_one_lifetime(systemd, tmp_path):
    """READY, STATUS, RELOADING/READY, WATCHDOG (withheld while wedged), STOPPING, EXTEND_TIMEOUT_USEC."""
    setup = Setup(tmp_path)
    first = setup.inbox("first")
    second = setup.inbox("second", watch="poll")
    config = setup.write()
    inbox = Path(first["path"])
    dump = tmp_path / "module-env"
    dump.mkdir()
    env = {
        "NOTIFY_SOCKET": systemd.address,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "CHUTE_TEST_ENV_DUMP": str(dump),
        "INVOCATION_ID": uuid.uuid4().hex,
    }
    # systemd sets WATCHDOG_PID to the main pid; without it, the watchdog applies as well (sd_watchdog_enabled(3)).
    pid_env = ("WATCHDOG_PID",) if systemd.address.startswith("/") else ()
    daemon = Daemon(config, env=env, pid_env=pid_env)
    systemd.log_path = daemon.log_path
    with daemon:
        # READY=1 once every inbox is watched: their events are in the log before it.
        ready = systemd.wait("READY=1")
        before_ready = daemon.log_path.read_bytes()[: ready.log_size].decode()
        assert {ev["inbox"] for ev in events_in(before_ready, "inbox.watching")} == {first["path"], second["path"]}
        assert events_in(before_ready, "daemon.started")
        systemd.wait("STATUS=0 queued, 0 running, 0 done, 0 failed")

        # A run: the counts follow it.
        drop(inbox, "one.bin", b"one\n")
        done = systemd.wait("STATUS=0 queued, 0 running, 1 done, 0 failed")
        statuses = [d.fields["STATUS"] for d in systemd.all("STATUS") if d.at <= done.at]
        assert "0 queued, 1 running, 0 done, 0 failed" in statuses
        assert files(Path(first["outbox"])) == ["one"]

        # Module processes never see what systemd gave the daemon alone.
        envs = [json.loads(p.read_text()) for p in sorted(dump.glob("*.env.json"))]
        assert len(envs) == 2  # both steps of the job
        for module_env in envs:
            assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & set(module_env)
            assert module_env["INVOCATION_ID"] == env["INVOCATION_ID"]
            assert module_env["CHUTE_TEST_ENV_DUMP"] == str(dump)

        # WATCHDOG=1 again and again while healthy (its cadence, half of WATCHDOG_USEC, is a timing: not asserted
        # here, where a loaded machine stretches every gap).
        since = time.monotonic()
        wait_until(lambda: len(systemd.pings(since)) >= 10, timeout=60)

        # SIGHUP: RELOADING=1 with the current CLOCK_MONOTONIC, then READY=1.
        since, before_usec = time.monotonic(), monotonic_usec()
        daemon.signal(signal.SIGHUP)
        reloading = systemd.wait("RELOADING=1", since)
        after_usec = monotonic_usec()
        assert before_usec <= int(reloading.fields["MONOTONIC_USEC"]) <= after_usec
        reloaded = systemd.wait("READY=1", reloading.at)
        daemon.wait_event("daemon.reloaded")
        assert len(systemd.all("READY=1")) == 2
        assert reloaded.at >= reloading.at

        # A wedged scheduler: the ledger is locked, so the loop blocks in its write for the
        # claimed file (busy timeout 30 s). Until then the idle loop still pings.
        ledger = sqlite3.connect(state_dir_of(config) / "ledger.sqlite3", isolation_level=None)
        try:
            ledger.execute("BEGIN EXCLUSIVE")
            systemd.wait("WATCHDOG=1", since=time.monotonic())
            drop(inbox, "two.bin", b"two\n")
            wait_until(lambda: claimed_inputs(inbox))
            wedged = time.monotonic()
            # Watch for six ping intervals: none may come while the loop is stuck.
            wait_until(lambda: time.monotonic() > wedged + 6 * PING, timeout=5)
            assert systemd.pings(wedged + 0.05) == []
            assert not daemon.events("file.claimed", file="two.bin")  # logged after the ledger write
        finally:
            ledger.execute("ROLLBACK")
            ledger.close()
        released = time.monotonic()
        systemd.wait("WATCHDOG=1", since=released, timeout=30)
        daemon.wait_event("run.published", file="two.bin")
        systemd.wait("STATUS=0 queued, 0 running, 2 done, 0 failed", since=released)

        # SIGTERM while a run is in flight: STOPPING=1, more time asked for the drain, the run finishes.
        drop(inbox, "three.bin", b"sleep=0.5\n")
        daemon.wait_event("entry.started", file="three.bin")
        since = time.monotonic()
        daemon.signal(signal.SIGTERM)
        stopping = systemd.wait("STOPPING=1", since)
        extend = systemd.wait("EXTEND_TIMEOUT_USEC", stopping.at)
        # Long enough for the drain, the modules' kill grace (5 s) and the margin before a stuck worker is killed.
        assert int(extend.fields["EXTEND_TIMEOUT_USEC"]) >= (setup.config["shutdown_timeout"] + 5 + 10) * 1_000_000
        during_drain = daemon.log_path.read_bytes()[: extend.log_size].decode()
        assert not [ev for ev in events_in(during_drain, "run.published") if ev["file"] == "three.bin"]
        assert daemon.proc.wait(30) == 0
        assert daemon.events("run.published", file="three.bin")
        assert systemd.all("READY=1", stopping.at) == []
        assert systemd.all("STATUS", stopping.at)[-1].fields["STATUS"] == "0 queued, 0 running, 3 done, 0 failed"


def test_no_watchdog_for_another_pid(tmp_path):
    """WATCHDOG_USEC meant for another process (WATCHDOG_PID is not ours): the daemon never pings."""
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify.sock")
    receiver.bind(address)
    systemd = Systemd(receiver, address)
    try:
        setup = Setup(tmp_path)
        first = setup.inbox()
        env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": str(os.getpid())}
        with Daemon(setup.write(), env=env) as daemon:
            systemd.wait("READY=1")
            drop(Path(first["path"]), "one.bin", b"one\n")
            systemd.wait("STATUS=0 queued, 0 running, 1 done, 0 failed")
            daemon.stop()
            systemd.wait("STOPPING=1")
        lifetime = systemd.got[-1].at - systemd.got[0].at
        assert lifetime > 2 * PING  # an enabled watchdog pings at once, then every PING seconds
        assert systemd.pings() == []
    finally:
        systemd.close()
