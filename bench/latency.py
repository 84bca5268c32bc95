"""How long a dropped file waits: from its close to `run.started`, with `watch: events` and `watch: poll`.

Usage: .venv/bin/python bench/latency.py [--files 50] [--settle 0.5]
       [--poll-interval 1.0] [--modes events,poll] [--keep DIR]

For each mode, starts `chute run` (tests/harness.py: the two-step copy job, one
inbox, 2 workers) and drops files one at a time: write, close, note time.time();
wait for that file's `run.started` in the daemon's JSON log and read its
timestamp (same host, same clock); wait for the run to be recorded; then a random
gap of up to one poll interval, so that drops land at every phase of the poll
cycle. Prints p50, p95 and max per mode, and each as a ratio of its bound:
settle + 0.2 s for events (the loop's 0.1 s tick, twice), settle + poll_interval
for poll.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import Daemon, Setup, event_time, ledger_states, wait_until  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile, linearly interpolated between the two nearest ranks."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def measure(root: Path, mode: str, files: int, settle: float, poll_interval: float, rng: random.Random) -> list[float]:
    """Latencies (s) from close to run.started of `files` files dropped one at a time into a `mode` inbox."""
    setup = Setup(root, defaults={"settle": settle, "poll_interval": poll_interval, "timeout": 60})
    setup.inbox(watch=mode)
    config = setup.write()
    inbox = root / "in"
    latencies = []
    with Daemon(config) as d:
        [watching] = d.events("inbox.watching")
        assert watching["mode"] == mode, watching
        for i in range(files):
            name = f"drop-{i:03d}.mov"
            with open(inbox / name, "wb") as f:
                f.write(b"latency\n" + bytes(4096))
            closed_at = time.time()
            [started] = d.wait_event("run.started", timeout=30, file=name)
            latencies.append(event_time(started) - closed_at)
            wait_until(lambda: ledger_states(config).get("succeeded", 0) >= i + 1, 30)
            time.sleep(rng.uniform(0.05, poll_interval))  # the gap: a random phase of the poll cycle
        assert d.stop() == 0
    return latencies


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=50)
    p.add_argument("--settle", type=float, default=0.5)
    p.add_argument("--poll-interval", type=float, default=1.0)
    p.add_argument("--modes", default="events,poll")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", type=Path, help="work in this folder and leave it (default: a temporary one)")
    args = p.parse_args()

    rng = random.Random(args.seed)
    bounds = {"events": args.settle + 0.2, "poll": args.settle + args.poll_interval}
    rows = []
    with tempfile.TemporaryDirectory(prefix="chute-latency-") as tmp:
        base = args.keep or Path(tmp)
        for mode in args.modes.split(","):
            root = base / mode
            root.mkdir(parents=True, exist_ok=True)
            t0 = time.monotonic()
            lat = measure(root, mode, args.files, args.settle, args.poll_interval, rng)
            rows.append((mode, lat, bounds[mode], time.monotonic() - t0))

    print(
        f"close -> run.started, {args.files} files per mode, settle {args.settle} s, "
        f"poll_interval {args.poll_interval} s"
    )
    print(
        f"{'mode':<7} {'min':>6} {'p50':>6} {'p95':>6} {'max':>6} {'mean':>6}   {'bound':>5}  "
        f"{'p50/bound':>9} {'p95/bound':>9} {'max/bound':>9}   wall"
    )
    for mode, lat, bound, wall in rows:
        p50, p95 = percentile(lat, 50), percentile(lat, 95)
        print(
            f"{mode:<7} {min(lat):6.3f} {p50:6.3f} {p95:6.3f} {max(lat):6.3f} {statistics.mean(lat):6.3f}   "
            f"{bound:5.2f}  {p50 / bound:9.2f} {p95 / bound:9.2f} {max(lat) / bound:9.2f}   {wall:.0f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
