"""Many inboxes at rest: what an idle daemon watching N inboxes costs (CPU-s per minute, threads, time to ready).

Usage: .venv/bin/python bench/inboxes.py [--inboxes 500] [--seconds 60] [--ignored 100]
       [--modes events,poll] [--keep DIR]

Each mode is a real `chute run` (tests/harness.py's setup, the default intervals:
`poll_interval` 5 s, `rescan_interval` 60 s, `lease_timeout` 120 s) on `--inboxes`
inboxes:

- `events`: empty inboxes, `watch: events` (inotify, the backstop listing every
  `rescan_interval`).
- `poll`: `watch: poll`, each inbox holding `--ignored` empty files named
  `skip-NNN.txt` that its `include: ["*.mov"]` does not take.

Time to ready is from the start of the process to its `daemon.started` event. After
two poll intervals more (the first listings and the `file.ignored` lines are start-up
cost), the daemon's CPU time (utime + stime of its process, all threads, from
/proc/PID/stat) is read, then again `--seconds` later; the thread count is
/proc/PID/status `Threads:` at the end of the window. Targets from issue 21.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.proctime import cpu  # noqa: E402
from tests.harness import Daemon, Setup  # noqa: E402

POLL_INTERVAL = 5.0
TARGETS = {"events": 0.3, "poll": 3.0}  # CPU-s per minute, issue 21


def threads(pid: int) -> int:
    """The number of threads of process `pid` (proc(5): /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Threads: line for {pid}")


def config(root: Path, mode: str, inboxes: int, ignored: int) -> Path:
    """A config of `inboxes` inboxes in `mode`, their folders made (and filled with ignored files in poll mode)."""
    defaults = {"settle": 2.0, "poll_interval": POLL_INTERVAL, "timeout": 60, "rescan_interval": 60.0}
    setup = Setup(root, defaults=defaults, lease_timeout=120, shutdown_timeout=10)
    for i in range(inboxes):
        name = f"in{i:04d}"
        setup.inbox(name, watch=mode, include=["*.mov"])
        folder = root / name
        folder.mkdir(parents=True)
        for j in range(ignored if mode == "poll" else 0):
            os.close(os.open(folder / f"skip-{j:03d}.txt", os.O_CREAT | os.O_WRONLY, 0o644))
    return setup.write()


def measure(root: Path, mode: str, args) -> dict[str, float]:
    """Time to ready, CPU-s per minute and threads of one daemon in `mode`."""
    cfg = config(root, mode, args.inboxes, args.ignored)
    d = Daemon(cfg)
    started = time.monotonic()
    d.start(wait=False)
    try:
        d.wait_event("daemon.started", timeout=300)
        ready = time.monotonic() - started
        time.sleep(2 * POLL_INTERVAL)
        before = cpu(d.pid)
        time.sleep(args.seconds)
        used = cpu(d.pid) - before
        count = threads(d.pid)
        assert d.events("file.claimed") == [], "a file was claimed: the bench measures an idle daemon"
        d.stop(60)
    finally:
        d.kill()
    return {"ready": ready, "cpu": used * 60 / args.seconds, "threads": count}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inboxes", type=int, default=500)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--ignored", type=int, default=100, help="ignored files per inbox in poll mode")
    p.add_argument("--modes", default="events,poll")
    p.add_argument("--keep", type=Path, help="work in this folder and leave it (default: a temporary one)")
    args = p.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="chute-inboxes-") as tmp:
        base = args.keep or Path(tmp)
        for mode in args.modes.split(","):
            rows.append((mode, measure(base / mode, mode, args)))

    print(
        f"\n{args.inboxes} idle inboxes, CPU measured over {args.seconds:g} s; poll_interval {POLL_INTERVAL:g} s, "
        f"rescan_interval 60 s; poll mode: {args.ignored} ignored files per inbox\n"
    )
    print("| watch | ready (s) | threads | CPU-s per minute | target |")
    print("|---|---|---|---|---|")
    for mode, m in rows:
        print(f"| {mode} | {m['ready']:.1f} | {m['threads']:.0f} | {m['cpu']:.2f} | ≤ {TARGETS[mode]:g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
