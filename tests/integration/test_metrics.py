"""Prometheus metrics (issue #15): scraped over real HTTP on 127.0.0.1, and as a node_exporter textfile.

The first tests drive `chute.metrics.Metrics` as the service does; the last ones
run `chute run`, drain files, and compare what Prometheus would read with the ledger.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import structlog.testing
from chute import __version__
from chute.config import MetricsConfig
from chute.metrics import FLUSH_INTERVAL, Metrics
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import CHUTE, Daemon, Setup, drop, files, ledger_states, wait_until

CHUTE_FAMILIES = {
    "chute_build_info",
    "chute_runs",
    "chute_run_duration_seconds",
    "chute_entries",
    "chute_entry_duration_seconds",
    "chute_module_retries",
    "chute_takeovers",
    "chute_deferred_deliveries",
    "chute_files_queued",
    "chute_files_running",
    "chute_oldest_queued_file_age_seconds",
    "chute_inbox_available",
    "chute_inbox_last_scan_timestamp_seconds",
}


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus text exposition, keyed by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape(host: str, port: int) -> dict:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        return parse(response.read().decode())


@pytest.fixture
def metrics():
    """Metrics made by `make(config)`, started, and closed afterwards."""
    made: list[Metrics] = []

    def make(config: MetricsConfig | None) -> Metrics:
        m = Metrics(config)
        m.start()
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def record_a_day(m: Metrics, inbox: str = "/srv/in") -> None:
    """What the service records over a few runs: three succeed (one after a retry), one fails."""
    for duration in (3.0, 40.0, 700.0):
        m.run_finished("proxy", "succeeded", duration)
    m.run_finished("proxy", "failed", 2.0)
    m.run_finished("proxy", "released", None)
    m.entry_finished("proxy", "probe", "succeeded", 0.4, attempts=1)
    m.entry_finished("proxy", "proxy", "succeeded", 30.0, attempts=3)
    m.entry_finished("proxy", "probe", "failed", 1.0, attempts=2)
    m.take_over(inbox)
    m.deferred(inbox, "outage")
    m.deferred(inbox, "outage")
    m.queue(queued=7, running=2, oldest_queued_age_s=93.5)
    m.inbox(inbox, available=True, scanned_at=1_795_000_000.0)
    m.inbox("/srv/gone", available=False, scanned_at=None)


def test_metrics_are_served_over_http(metrics):
    m = metrics(MetricsConfig(listen="127.0.0.1:0"))
    record_a_day(m)
    s = scrape(*m.address)

    assert value(s, "chute_runs_total", job_name="proxy", status="succeeded") == 3
    assert value(s, "chute_runs_total", job_name="proxy", status="failed") == 1
    assert value(s, "chute_runs_total", job_name="proxy", status="released") == 1
    assert value(s, "chute_run_duration_seconds_count", job_name="proxy") == 4  # a released run has no duration
    assert value(s, "chute_run_duration_seconds_sum", job_name="proxy") == 745.0
    assert value(s, "chute_run_duration_seconds_bucket", job_name="proxy", le="60.0") == 3
    assert value(s, "chute_entries_total", job_name="proxy", module="probe", status="failed") == 1
    assert value(s, "chute_entry_duration_seconds_count", job_name="proxy", module="probe") == 2
    assert value(s, "chute_module_retries_total", job_name="proxy", module="proxy") == 2
    assert value(s, "chute_module_retries_total", job_name="proxy", module="probe") == 1
    assert value(s, "chute_takeovers_total", inbox="/srv/in") == 1
    assert value(s, "chute_deferred_deliveries_total", inbox="/srv/in", kind="outage") == 2
    assert (value(s, "chute_files_queued"), value(s, "chute_files_running")) == (7, 2)
    assert value(s, "chute_oldest_queued_file_age_seconds") == 93.5
    assert value(s, "chute_inbox_available", inbox="/srv/in") == 1
    assert value(s, "chute_inbox_available", inbox="/srv/gone") == 0
    assert value(s, "chute_inbox_last_scan_timestamp_seconds", inbox="/srv/in") == 1_795_000_000.0
    assert value(s, "process_start_time_seconds") is not None

    m.queue(queued=0, running=0, oldest_queued_age_s=None)
    assert value(scrape(*m.address), "chute_oldest_queued_file_age_seconds") == 0
    address = m.address
    m.close()
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=5).close()


def test_two_daemons_in_one_process_keep_their_own_counts(metrics):
    a, b = metrics(MetricsConfig(listen="127.0.0.1:0")), metrics(MetricsConfig(listen="127.0.0.1:0"))
    a.run_finished("proxy", "succeeded", 1.0)
    assert value(scrape(*a.address), "chute_runs_total", job_name="proxy", status="succeeded") == 1
    assert value(scrape(*b.address), "chute_runs_total", job_name="proxy", status="succeeded") is None


def test_a_busy_port_is_logged_and_the_daemon_goes_on(metrics):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with structlog.testing.capture_logs() as logs:
            m = metrics(MetricsConfig(listen=f"127.0.0.1:{busy.getsockname()[1]}"))
            record_a_day(m)
    [failed] = [e for e in logs if e["event"] == "metrics.failed"]
    assert "cannot listen on 127.0.0.1:" in failed["reason"] and m.address is None


def test_without_a_config_every_method_is_a_no_op(tmp_path):
    m = Metrics(None)
    m.start()
    record_a_day(m)
    m.flush(time.monotonic())
    m.close()
    assert m.address is None and list(tmp_path.iterdir()) == []


def test_the_textfile_is_replaced_atomically(metrics, tmp_path):
    """A reader (node_exporter) never sees a half-written file, whatever the umask; no temporary is left."""
    path = tmp_path / "chute.prom"
    old_umask = os.umask(0o077)
    try:
        m = metrics(MetricsConfig(textfile=path))
        record_a_day(m)
        reads: list[str] = []
        done = threading.Event()

        def node_exporter() -> None:
            while not done.is_set():
                try:
                    reads.append(path.read_text())
                except FileNotFoundError:
                    pass

        reader = threading.Thread(target=node_exporter)
        reader.start()
        try:
            for n in range(200):
                m.queue(queued=n, running=1, oldest_queued_age_s=float(n))
                m.inbox(f"/srv/in{n}", available=True, scanned_at=float(n))  # the file grows as it goes
                m.flush(n * FLUSH_INTERVAL)
            wait_until(lambda: len(reads) >= 50)
        finally:
            done.set()
            reader.join(10)
        m.close()
    finally:
        os.umask(old_umask)

    queued_seen = []
    for text in dict.fromkeys(reads):  # each content read once, in the order first seen
        samples = parse(text)
        assert {name for name, _ in samples} >= {"chute_files_queued", "chute_build_info"}
        assert {f.name for f in text_string_to_metric_families(text)} >= CHUTE_FAMILIES
        queued = value(samples, "chute_files_queued")
        n = int(queued)
        assert value(samples, "chute_inbox_available", inbox=f"/srv/in{n}") == 1  # all of one write, nothing cut
        queued_seen.append(queued)
    assert queued_seen == sorted(queued_seen)
    assert value(parse(path.read_text()), "chute_files_queued") == 199
    assert os.listdir(tmp_path) == ["chute.prom"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_the_textfile_is_rewritten_at_most_every_flush_interval(metrics, tmp_path):
    path = tmp_path / "chute.prom"
    m = metrics(MetricsConfig(textfile=path))
    m.queue(queued=1, running=0, oldest_queued_age_s=None)
    m.flush(1000.0)
    first = path.stat().st_ino
    m.queue(queued=2, running=0, oldest_queued_age_s=None)
    m.flush(1000.0 + FLUSH_INTERVAL / 2)
    assert path.stat().st_ino == first and value(parse(path.read_text()), "chute_files_queued") == 1
    m.flush(1000.0 + FLUSH_INTERVAL)
    assert path.stat().st_ino != first and value(parse(path.read_text()), "chute_files_queued") == 2


def test_an_unwritable_textfile_is_logged_once_and_never_raised(metrics, tmp_path):
    with structlog.testing.capture_logs() as logs:
        m = metrics(MetricsConfig(textfile=tmp_path / "missing" / "chute.prom"))
        for n in range(3):
            m.flush(n * FLUSH_INTERVAL)
    assert [e["event"] for e in logs] == ["metrics.failed"]
    assert "cannot write" in logs[0]["reason"]


# --- the daemon: `chute run` with metrics (the service's wiring) ---


def _drain(tmp_path: Path, metrics_config: dict) -> tuple[Daemon, Path, dict, float]:
    setup = Setup(tmp_path, metrics=metrics_config)
    inbox = setup.inbox()
    return setup, setup.write(), inbox, time.time()


def _assert_matches_ledger(s: dict, config: Path, inbox: dict, started: float) -> None:
    states = ledger_states(config)
    assert states == {"succeeded": 4, "failed": 2}
    for status, state in (("succeeded", "succeeded"), ("failed", "failed")):
        assert value(s, "chute_runs_total", job_name="twostep", status=status) == states[state]
    assert value(s, "chute_run_duration_seconds_count", job_name="twostep") == 6
    # Good files run both steps' copy entries; bad ones fail in the first.
    assert value(s, "chute_entry_duration_seconds_count", job_name="twostep", module="copy") == 4 * 2 + 2
    assert (value(s, "chute_files_queued"), value(s, "chute_files_running")) == (0, 0)
    assert value(s, "chute_inbox_available", inbox=inbox["path"]) == 1
    assert value(s, "chute_inbox_last_scan_timestamp_seconds", inbox=inbox["path"]) >= started


def _drop_six(inbox: dict) -> None:
    for i in range(4):
        drop(Path(inbox["path"]), f"good-{i}.mov", f"good {i}\n".encode())
    for i in range(2):
        drop(Path(inbox["path"]), f"bad-{i}.mov", b"fail\n")


def _scraped_after_six(d: Daemon, config: Path, inbox: dict) -> tuple[str, int]:
    """The daemon's metrics address, once the six files it was given are run and the gauges say so."""
    [listening] = d.wait_event("metrics.listening", timeout=10)
    host, port = listening["address"].rsplit(":", 1)
    _drop_six(inbox)
    wait_until(lambda: ledger_states(config) == {"succeeded": 4, "failed": 2}, 60)
    # The loop publishes the queue gauges on its next tick after the last run is recorded.
    wait_until(lambda: value(scrape(host, int(port)), "chute_files_running") == 0, 10)
    return host, int(port)


def test_metrics_scraped_from_a_running_daemon_match_the_ledger(tmp_path):
    _, config, inbox, started = _drain(tmp_path, {"listen": "127.0.0.1:0"})
    with Daemon(config) as d:
        address = _scraped_after_six(d, config, inbox)
        _assert_matches_ledger(scrape(*address), config, inbox, started)
        assert d.stop() == 0


def test_a_reload_keeps_the_counts_and_drops_the_gauges_of_a_removed_inbox(tmp_path):
    setup, config, inbox, started = _drain(tmp_path, {"listen": "127.0.0.1:0"})
    other = setup.inbox("other")
    setup.write()
    with Daemon(config) as d:
        address = _scraped_after_six(d, config, inbox)
        assert value(scrape(*address), "chute_inbox_available", inbox=other["path"]) == 1
        # A reload that adds a notification target and removes an inbox.
        setup.config["inboxes"].remove(other)
        setup.config["notify"] = [{"url": "json://127.0.0.1:9/hook"}]
        setup.write()
        d.signal(signal.SIGHUP)
        d.wait_event("daemon.reloaded")
        wait_until(lambda: value(scrape(*address), "chute_inbox_available", inbox=other["path"]) is None, 10)
        _assert_matches_ledger(scrape(*address), config, inbox, started)  # the same server, the same counts
        assert len(d.events("metrics.listening")) == 1
        assert d.stop() == 0


def test_the_textfile_of_a_stopped_daemon_matches_the_ledger(tmp_path):
    path = tmp_path / "textfile" / "chute.prom"
    path.parent.mkdir()
    _, config, inbox, started = _drain(tmp_path, {"textfile": str(path)})
    with Daemon(config) as d:
        _drop_six(inbox)
        wait_until(lambda: ledger_states(config) == {"succeeded": 4, "failed": 2}, 60)
        wait_until(path.exists, 2 * FLUSH_INTERVAL + 5)
        assert d.stop() == 0
    _assert_matches_ledger(parse(path.read_text()), config, inbox, started)
    assert os.listdir(path.parent) == ["chute.prom"]


# --- issue #19: nothing a client of /metrics does can take the daemon's descriptors, threads or time ---


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed `sock` (EOF or reset), waiting up to a second for it to say so."""
    sock.settimeout(1.0)
    try:
        return sock.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _ask(address: tuple[str, int], request: bytes) -> bytes:
    """Send `request` raw and read the whole answer (the server closes after one)."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_idle_connections_never_stop_claiming_nor_grow_the_daemon(tmp_path):
    """300 connections that send nothing, a slowloris and garbage: scrapes answer, files are published,
    and the daemon's descriptors and threads stay bounded."""
    from chute.metrics_http import MAX_CONNECTIONS

    _, config, inbox, _ = _drain(tmp_path, {"listen": "127.0.0.1:0"})
    with Daemon(config) as d:
        [listening] = d.wait_event("metrics.listening", timeout=10)
        host, port = listening["address"].rsplit(":", 1)
        address = (host, int(port))
        scrape(*address)
        fds, threads = _fds(d.pid), _threads(d.pid)

        idle = [socket.create_connection(address, timeout=10) for _ in range(300)]
        try:
            # The last ones are held open by the server (up to its cap); a scrape still gets in.
            assert value(scrape(*address), "chute_inbox_available", inbox=inbox["path"]) == 1
            assert _fds(d.pid) <= fds + MAX_CONNECTIONS + 4
            assert _threads(d.pid) <= threads + 1
            _drop_six(inbox)
            wait_until(lambda: ledger_states(config) == {"succeeded": 4, "failed": 2}, 60)
            assert len(files(Path(inbox["outbox"]))) == 4 and files(Path(inbox["path"])) == []
            assert _threads(d.pid) <= threads + 1
            # Every idle connection is closed by the server: its read deadline or a newer client.
            wait_until(lambda: all(_closed_by_server(s) for s in idle), 60)
        finally:
            for s in idle:
                s.close()

        # A slowloris: a header byte every 0.2 s, never the end of its request.
        slow = socket.create_connection(address, timeout=10)
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")
        dropped = threading.Event()

        def dribble() -> None:
            while not dropped.is_set():
                try:
                    slow.sendall(b"X")
                except OSError:
                    dropped.set()
                    return
                dropped.wait(0.2)

        dribbler = threading.Thread(target=dribble)
        dribbler.start()
        try:
            wait_until(lambda: dropped.is_set() or _closed_by_server(slow), 30)
        finally:
            dropped.set()
            dribbler.join(10)
            slow.close()

        # Garbage and oversized requests get a one-line answer, never a traceback or a hang.
        assert _ask(address, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert _ask(address, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
        assert _ask(address, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")
        assert _ask(address, b"GET /secret HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
        head = _ask(address, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
        assert value(scrape(*address), "chute_runs_total", job_name="twostep", status="succeeded") == 4
        wait_until(lambda: _fds(d.pid) <= fds + 2, 20)  # every connection closed (+2: a run's brief ones)
        assert d.events("daemon.error") == [] and d.events("inbox.unavailable") == []
        assert "Traceback" not in d.text()
        assert d.stop() == 0


def test_a_daemon_out_of_descriptors_says_so_and_never_calls_an_inbox_unavailable(tmp_path):
    """Its soft RLIMIT_NOFILE lowered under it (prlimit(2)): no new descriptor can be had. The inbox is
    not reported unavailable, nothing is lost, and the file is published once descriptors are back."""
    import resource

    setup = Setup(tmp_path, metrics={"listen": "127.0.0.1:0"})
    inbox = setup.inbox(watch="poll")  # listed every poll_interval: each look needs a new descriptor
    config = setup.write()
    with Daemon(config) as d:
        [listening] = d.wait_event("metrics.listening", timeout=10)
        host, port = listening["address"].rsplit(":", 1)
        limit = resource.prlimit(d.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (3, limit[1]))  # below its lowest free descriptor
        try:
            drop(Path(inbox["path"]), "clip.mov", b"clip\n")
            [short] = d.wait_event("daemon.resources", timeout=20, where="inbox scan")
            assert (short["errno"], short["inbox"], short["fd_limit"]) == ("EMFILE", inbox["path"], 3)
            # A scrape meanwhile cannot be accepted; the endpoint backs off instead of spinning.
            with socket.create_connection((host, int(port)), timeout=10):
                d.wait_event("daemon.resources", timeout=20, where="metrics endpoint")
            assert files(Path(inbox["path"])) == ["clip.mov"]
        finally:
            resource.prlimit(d.pid, resource.RLIMIT_NOFILE, limit)
        d.wait_event("daemon.resources_recovered", timeout=20)
        wait_until(lambda: ledger_states(config) == {"succeeded": 1}, 60)
        assert files(Path(inbox["archive"])) == ["clip.mov"] and len(files(Path(inbox["outbox"]))) == 1
        assert value(scrape(host, int(port)), "chute_inbox_available", inbox=inbox["path"]) == 1
        assert d.events("inbox.unavailable") == [] and d.events("daemon.error") == []
        assert "Traceback" not in d.text()
        assert len(d.events("daemon.resources", where="inbox scan")) == 1  # once per spell, not every look
        assert d.stop() == 0


ACCEPTED = ["127.0.0.1:0", "0.0.0.0:0", "localhost:0", "[::1]:0", "[::]:0"]
REJECTED = [
    "[]:9464",
    "[127.0.0.1]:9464",
    "::1:9464",
    "[::1:9464",
    "256.1.1.1:9464",
    "1.2.3:9464",
    "*:9464",
    "my_host:9464",
    " 127.0.0.1:9464",
    "127.0.0.1:70000",
    "127.0.0.1:",
    ":9464",
    "localhost",
]


@pytest.mark.parametrize("listen", ACCEPTED)
def test_every_listen_address_chute_check_accepts_can_be_bound(metrics, listen):
    if listen.startswith("[") and not socket.has_ipv6:
        pytest.skip("this Python was built without IPv6, so an [address] cannot be bound here")
    m = metrics(MetricsConfig(listen=listen))
    assert m.address is not None
    assert (
        value(
            scrape("localhost" if listen.startswith(("0.", "[::]")) else listen.rsplit(":", 1)[0], m.address[1]),
            "chute_build_info",
            version=__version__,
        )
        == 1
    )


@pytest.mark.parametrize("listen", REJECTED)
def test_a_listen_address_that_cannot_be_bound_is_rejected(listen):
    with pytest.raises(ValueError, match="HOST:PORT|cannot be bound"):
        MetricsConfig(listen=listen)


def test_chute_check_names_an_empty_bracketed_listen_address(tmp_path):
    setup = Setup(tmp_path, metrics={"listen": "[]:9464"})
    setup.inbox()
    proc = subprocess.run(
        [str(CHUTE), "check", "--config", str(setup.write())], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert (
        "metrics.listen: '[]:9464' cannot be bound: [] is not an IPv6 address in brackets" in proc.stderr + proc.stdout
    )
    assert "Traceback" not in proc.stderr
