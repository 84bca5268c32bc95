"""The daemon's log lines as an operator reads them (contract §9): `chute run` as a subprocess.

JSON when stdout is a file or a pipe, coloured console lines on a terminal (a real
pty), `log.format` forcing either, an sd-daemon(3) priority prefix when stdout is
the journal's stream, and standard-library logging (watchdog's) through the same
renderer.
"""

from __future__ import annotations

import errno
import json
import os
import pty
import re
import signal
import socket
import subprocess
import threading
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from chute.entry import sweep

from tests.harness import CHUTE, Daemon, Setup, drop, wait_until

RUN_EVENTS = (
    "file.claimed",
    "run.started",
    "entry.started",
    "entry.finished",
    "entry.failed",
    "run.published",
    "run.quarantined",
    "run.released",
)
RUN_FIELDS = ("run_id", "job", "inbox", "file")
LEVELS = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "2026-11-24T18:05:12.120000Z [info     ] daemon.started   config=..."
CONSOLE_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \[(\w+)\s*\] (\S+)")


def parse_json_line(line: str) -> dict:
    ev = json.loads(line)
    assert isinstance(ev, dict), line
    assert list(ev)[:3] == ["timestamp", "level", "event"], line
    assert datetime.fromisoformat(ev["timestamp"]).utcoffset().total_seconds() == 0, line
    assert ev["level"] in LEVELS, line
    return ev


def test_json_lines_with_run_fields(tmp_path):
    """Not a terminal: every line is a JSON event; every run event names its run, job, inbox and file."""
    setup = Setup(tmp_path, shutdown_timeout=0.5)
    entry = setup.inbox()
    inbox = Path(entry["path"])
    # Inherited from a session systemd started, but not this process's stdout: no prefix.
    with Daemon(setup.write(), env={"JOURNAL_STREAM": "8:12345"}) as daemon:
        drop(inbox, "good.bin", b"good\n")
        drop(inbox, "bad.bin", b"fail\n")
        daemon.wait_event("run.published", file="good.bin")
        daemon.wait_event("run.quarantined", file="bad.bin")
        drop(inbox, "slow.bin", b"sleep=30\n")
        daemon.wait_event("entry.started", file="slow.bin")
        assert daemon.stop() == 0
        daemon.wait_event("run.released", file="slow.bin")

    lines = daemon.text().splitlines()
    events = [parse_json_line(line) for line in lines]
    names = {ev["event"] for ev in events}
    assert set(RUN_EVENTS) <= names, set(RUN_EVENTS) - names
    assert {"daemon.started", "daemon.stopping", "daemon.stopped"} <= names
    # A failed module and a graceful stop are not errors: `journalctl -p err` stays empty.
    assert [ev for ev in events if ev["level"] in ("error", "critical")] == []
    run_ids = {}
    for ev in events:
        if ev["event"] in RUN_EVENTS:
            assert all(ev.get(k) for k in RUN_FIELDS), ev
            assert (ev["job"], ev["inbox"]) == ("twostep", str(inbox)), ev
            assert run_ids.setdefault(ev["file"], ev["run_id"]) == ev["run_id"], ev  # one run per file
    assert set(run_ids) == {"good.bin", "bad.bin", "slow.bin"}


def test_journal_priority_prefix_and_stdlib_logging(tmp_path):
    """Stdout is the journal's stream: `<N>` + JSON on every line, watchdog's own (stdlib) lines included."""
    setup = Setup(tmp_path, log={"format": "auto", "level": "debug"})
    inbox = Path(setup.inbox()["path"])
    config = setup.write()
    with Daemon(config, journal=True) as daemon:
        drop(inbox, "good.bin", b"good\n")
        drop(inbox, "bad.bin", b"fail\n")
        daemon.wait_event("run.published", file="good.bin")
        daemon.wait_event("run.quarantined", file="bad.bin")
        config.write_text(config.read_text().replace("workers: 2", "workers: two"))
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("daemon.reload_failed")
        assert daemon.stop() == 0

    priorities = {}
    for line in daemon.text().splitlines():
        match = re.fullmatch(r"<(\d)>(\{.*\})", line)
        assert match, line
        ev = parse_json_line(match[2])
        assert int(match[1]) == LEVELS[ev["level"]], line
        priorities.setdefault(ev["event"], int(match[1]))
    assert priorities["daemon.started"] == 6
    assert priorities["run.quarantined"] == 4
    assert priorities["daemon.reload_failed"] == 3


def test_a_standard_library_record_reaches_the_journal_with_its_priority(monkeypatch):
    """A library's own logging (watchdog's inotify overflow warning) goes out as chute's lines do.

    In-process: the daemon's libraries log through the standard library only on rare faults
    (an inotify queue overflow), which a test cannot provoke without changing the host's limits.
    """
    import logging

    import structlog
    from chute import logs

    ours, theirs = socket.socketpair()
    st = os.fstat(ours.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = ours.makefile("w")
    try:
        logs.configure("auto", "info", stream)
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        stream.flush()
        [line] = theirs.recv(65536).decode().splitlines()
    finally:
        root.handlers[:], root.level = handlers, level
        structlog.reset_defaults()
        stream.close()
        ours.close()
        theirs.close()
    assert line.startswith("<4>{"), line
    ev = json.loads(line[3:])
    assert (ev["level"], ev["logger"]) == ("warning", "watchdog.observers.inotify_c")
    assert "overflowed" in ev["event"]


class Terminal:
    """A pseudo-terminal for a child's stdout and stderr; a thread collects what it prints."""

    def __init__(self):
        self.master, self.slave = pty.openpty()
        self.output = b""
        self._thread = threading.Thread(target=self._read, name="pty-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError as exc:  # EIO: every writer has closed the other end
                assert exc.errno in (errno.EIO, errno.EBADF)
                return
            if not chunk:
                return
            self.output += chunk

    def lines(self) -> list[str]:
        return [ANSI.sub("", line) for line in self.output.decode(errors="replace").splitlines() if line.strip()]

    def close(self) -> None:
        if self.slave is not None:
            os.close(self.slave)
            self.slave = None
        self._thread.join(10)
        os.close(self.master)


def start(config: Path, stdout: int, marker: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    env["CHUTE_TEST_DAEMON"] = marker
    return subprocess.Popen(
        [str(CHUTE), "run", "--config", str(config)], stdin=subprocess.DEVNULL, stdout=stdout, stderr=stdout, env=env
    )


@pytest.fixture
def terminal():
    term = Terminal()
    marker = uuid.uuid4().hex
    procs = []

    def run(config: Path, stdout: int | None = None) -> subprocess.Popen:
        proc = start(config, term.slave if stdout is None else stdout, marker)
        procs.append(proc)
        return proc

    yield term, run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    sweep(f"CHUTE_TEST_DAEMON={marker}")
    term.close()


def test_console_lines_on_a_terminal(tmp_path, terminal):
    """On a terminal: coloured, readable lines, from the daemon and its run workers alike."""
    term, run = terminal
    setup = Setup(tmp_path)
    inbox = Path(setup.inbox()["path"])
    proc = run(setup.write())
    wait_until(lambda: "daemon.started" in term.output.decode(errors="replace"))
    drop(inbox, "good.bin", b"good\n")
    wait_until(lambda: "run.published" in term.output.decode(errors="replace"))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    wait_until(lambda: "daemon.stopped" in term.output.decode(errors="replace"))

    assert b"\x1b[" in term.output  # coloured
    seen = []
    for line in term.lines():
        with pytest.raises(ValueError):
            json.loads(line)
        match = CONSOLE_LINE.match(line)
        assert match, line
        seen.append(match[2])
        if match[2] in RUN_EVENTS:
            assert "file=good.bin" in line and "job=twostep" in line and "run_id=" in line, line
    for name in (
        "daemon.started",
        "file.claimed",
        "run.started",
        "entry.started",
        "entry.finished",
        "run.published",
        "daemon.stopped",
    ):
        assert name in seen, (name, seen)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_log_format_forces(tmp_path, terminal, fmt):
    """`log.format: json` on a terminal writes JSON; `console` into a file writes plain console lines."""
    term, run = terminal
    setup = Setup(tmp_path, log={"format": fmt, "level": "info"})
    setup.inbox()
    log_path = tmp_path / "out.log"
    with open(log_path, "wb") as log:
        proc = run(setup.write(), stdout=None if fmt == "json" else log.fileno())
        read = (lambda: term.output.decode(errors="replace")) if fmt == "json" else log_path.read_text
        wait_until(lambda: "daemon.started" in read())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        wait_until(lambda: "daemon.stopped" in read())
    text = read()
    lines = [line for line in text.splitlines() if line.strip()]
    if fmt == "json":
        events = [parse_json_line(line) for line in lines]
        assert events[-1]["event"] == "daemon.stopped"
    else:
        assert "\x1b[" not in text  # not a terminal: no colour codes in the file
        assert all(CONSOLE_LINE.match(line) for line in lines), lines
        assert CONSOLE_LINE.match(lines[-1])[2] == "daemon.stopped"


def test_console_lines_show_hostile_names_escaped(tmp_path, terminal):
    """A file name in a console line cannot drive the terminal, split the line, or crash the log (issue 19)."""
    term, run = terminal
    setup = Setup(tmp_path)
    inbox = Path(setup.inbox()["path"])
    # An OSC sequence that retitles the terminal and a Latin-1 byte (not UTF-8); the second also a space and a
    # newline, which make the renderer quote the value.
    bare = os.fsdecode(b"\x1b]0;owned\x07caf\xe9.bin")
    spaced = os.fsdecode(b"\x1b]0;owned\x07 caf\xe9\nforged.bin")
    proc = run(setup.write())
    wait_until(lambda: "daemon.started" in term.output.decode(errors="replace"))
    for name in (bare, spaced):
        (inbox / name).write_bytes(b"good\n")
    wait_until(lambda: term.output.decode(errors="replace").count("run.published") == 2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    wait_until(lambda: "daemon.stopped" in term.output.decode(errors="replace"))

    text = ANSI.sub("", term.output.decode("utf-8"))  # strict: no raw byte of a name reached the terminal
    assert "\x1b" not in text and "\x07" not in text  # only chute's own colour codes were escapes
    assert "Traceback" not in text
    published = [line for line in text.splitlines() if "run.published" in line]
    assert len(published) == 2, published
    assert any("file=\\x1b]0;owned\\x07caf\\xe9.bin " in line for line in published), published
    assert any("file='\\x1b]0;owned\\x07 caf\\xe9\\nforged.bin'" in line for line in published), published
    assert not [line for line in text.splitlines() if line.startswith("forged.bin")]  # no line split off
