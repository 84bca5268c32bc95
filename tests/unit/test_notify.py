"""sd_notify over a real NOTIFY_SOCKET: the datagrams systemd would read."""

from __future__ import annotations

import os
import socket
import time

import pytest
import structlog.testing
from chute.systemd import Notifier, module_environ, status_line

from tests.harness import bind_notify_socket


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request, tmp_path):
    """A bound AF_UNIX datagram socket standing in for systemd, and its $NOTIFY_SOCKET value."""
    receiver, address = bind_notify_socket(request.param, tmp_path)
    receiver.settimeout(5)
    yield receiver, address
    receiver.close()


@pytest.fixture
def notifier(notify_socket):
    _, address = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    yield notifier
    notifier.close()


def received(receiver: socket.socket) -> bytes:
    return receiver.recv(4096)


def test_enabled_when_notify_socket_is_set(notifier):
    assert notifier.enabled


@pytest.mark.parametrize(
    ("call", "datagram"),
    [
        (lambda n: n.ready(), b"READY=1"),
        (lambda n: n.stopping(), b"STOPPING=1"),
        (lambda n: n.watchdog(), b"WATCHDOG=1"),
        (lambda n: n.extend_timeout(90), b"EXTEND_TIMEOUT_USEC=90000000"),
        (lambda n: n.extend_timeout(1.5), b"EXTEND_TIMEOUT_USEC=1500000"),
        (
            lambda n: n.status("2 queued, 1 running, 40 done, 3 failed"),
            b"STATUS=2 queued, 1 running, 40 done, 3 failed",
        ),
    ],
    ids=["ready", "stopping", "watchdog", "extend_timeout", "extend_timeout_fraction", "status"],
)
def test_sends_exact_datagram(notify_socket, notifier, call, datagram):
    receiver, _ = notify_socket
    call(notifier)
    assert received(receiver) == datagram


def test_reloading_carries_the_monotonic_time(notify_socket, notifier):
    receiver, _ = notify_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    first, second = received(receiver).split(b"\n")
    assert first == b"RELOADING=1"
    key, _, value = second.partition(b"=")
    assert key == b"MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_status_is_sent_only_when_it_changes(notify_socket, notifier):
    receiver, _ = notify_socket
    notifier.status("0 queued, 1 running, 0 done, 0 failed")
    notifier.status("0 queued, 1 running, 0 done, 0 failed")
    notifier.status("0 queued, 0 running, 1 done, 0 failed")
    notifier.ready()  # a sentinel: whatever came before it was sent

    assert [received(receiver) for _ in range(3)] == [
        b"STATUS=0 queued, 1 running, 0 done, 0 failed",
        b"STATUS=0 queued, 0 running, 1 done, 0 failed",
        b"READY=1",
    ]


def test_status_stays_one_assignment(notify_socket, notifier):
    receiver, _ = notify_socket
    notifier.status("disk full\nREADY=1")
    assert received(receiver) == b"STATUS=disk full READY=1"


def test_sends_again_after_close(notify_socket, notifier):
    receiver, _ = notify_socket
    notifier.close()
    notifier.close()
    notifier.watchdog()
    assert received(receiver) == b"WATCHDOG=1"


def test_disabled_without_notify_socket():
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    with structlog.testing.capture_logs() as logs:
        notifier.ready()
        notifier.status("1 queued, 0 running, 0 done, 0 failed")
        notifier.reloading()
        notifier.watchdog()
        notifier.extend_timeout(10)
        notifier.stopping()
        notifier.close()
    assert logs == []


@pytest.mark.parametrize("address", ["missing", "@chute-test-nobody-listens", "vsock:2:1234"])
def test_unreachable_socket_never_raises_and_logs_once(tmp_path, address):
    if address == "missing":
        address = str(tmp_path / "no-such-socket")
    notifier = Notifier({"NOTIFY_SOCKET": address})
    with structlog.testing.capture_logs() as logs:
        notifier.ready()
        notifier.status("1 queued, 0 running, 0 done, 0 failed")
        notifier.reloading()
        notifier.watchdog()
        notifier.watchdog()
        notifier.extend_timeout(10)
        notifier.stopping()
    notifier.close()

    assert notifier.enabled
    assert [entry["event"] for entry in logs] == ["systemd.notify_failed"]
    assert logs[0]["socket"] == address


def test_status_is_resent_after_a_failed_send(tmp_path):
    path = tmp_path / "notify"
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    with structlog.testing.capture_logs():
        notifier.status("1 queued, 0 running, 0 done, 0 failed")  # systemd not there yet
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(5)
    try:
        notifier.status("1 queued, 0 running, 0 done, 0 failed")
        assert received(receiver) == b"STATUS=1 queued, 0 running, 0 done, 0 failed"
    finally:
        receiver.close()
        notifier.close()


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "3000", "WATCHDOG_PID": str(os.getpid())}, 0.0015),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "thirty"}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
        ({}, None),
    ],
    ids=["usec", "usec-own-pid", "small", "other-pid", "zero", "garbage", "pid-only", "unset"],
)
def test_watchdog_interval_is_half_of_watchdog_usec(environ, interval):
    notifier = Notifier({"NOTIFY_SOCKET": "/run/systemd/notify", **environ})
    assert notifier.watchdog_interval == interval


def test_module_environ_drops_what_systemd_gave_the_daemon():
    daemon_environ = {
        "PATH": "/usr/bin:/bin",
        "INVOCATION_ID": "0123456789abcdef0123456789abcdef",
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": "4242",
        "LISTEN_FDS": "1",
        "LISTEN_PID": "4242",
        "LISTEN_FDNAMES": "http",
        "CHUTE_RUN_ID": "20261124T180512Z-3f9a1c",
    }
    original = dict(daemon_environ)

    assert module_environ(daemon_environ) == {
        "PATH": "/usr/bin:/bin",
        "INVOCATION_ID": "0123456789abcdef0123456789abcdef",
        "CHUTE_RUN_ID": "20261124T180512Z-3f9a1c",
    }
    assert daemon_environ == original


def test_status_line():
    assert status_line(2, 1, 40, 3) == "2 queued, 1 running, 40 done, 3 failed"
    assert status_line(0, 0, 0, 0) == "0 queued, 0 running, 0 done, 0 failed"
    assert status_line(3, 0, 7, 0, waiting=2) == "3 queued (2 waiting: deferred), 0 running, 7 done, 0 failed"


def test_status_line_says_how_many_inboxes_are_outside_their_schedule():
    assert status_line(0, 0, 5, 0, outside=1) == "0 queued, 0 running, 5 done, 0 failed; 1 inbox outside its schedule"
    assert status_line(1, 1, 5, 0, paused=1, outside=2) == (
        "1 queued, 1 running, 5 done, 0 failed; paused: 1 inbox; 2 inboxes outside their schedule"
    )
