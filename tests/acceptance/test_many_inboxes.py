"""Many inboxes in events mode: one inotify reader for all of them, and each still served (issue 21)."""

from __future__ import annotations

from pathlib import Path

from tests.harness import Daemon, Setup, drop, files, ledger_states, wait_until

MAX_THREADS = 20  # the daemon's own threads, whatever the number of inboxes


def threads(pid: int) -> int:
    """The number of threads of process `pid` (proc(5): /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads: line for {pid}")


def many(root: Path, count: int) -> Path:
    """A config of `count` inboxes watched by inotify (Setup.inbox makes their folders)."""
    setup = Setup(root)
    for i in range(count):
        setup.inbox(f"in{i:02d}", watch="events")
    return setup.write()


def test_fifty_inboxes_take_no_more_threads_than_five_and_the_last_one_is_served(tmp_path):
    counts = {}
    for count in (5, 50):
        with Daemon(many(tmp_path / str(count), count)) as d:
            counts[count] = threads(d.pid)
            d.stop()
    # watchdog's Observer ran a thread per watched folder: 50 inboxes were 54 threads.
    assert counts[50] <= MAX_THREADS
    assert counts[50] <= counts[5] + 1, counts

    root = tmp_path / "50"
    config = root / "chute.yaml"
    with Daemon(config) as d:
        drop(root / "in49", "clip.mp4", b"late in the list")
        wait_until(lambda: ledger_states(config).get("succeeded") == 1, 30)
        assert files(root / "in49-archive") == ["clip.mp4"]
        assert len(files(root / "in49-out")) == 1
        assert d.events("inbox.unavailable") == []
