"""Does a bad notification endpoint slow a drain? 20 files with notify off, a hanging and a refusing receiver.

Usage: .venv/bin/python bench/notify_drain.py [--files 20] [--rounds 3] [--keep DIR]

Each round starts `chute run` (tests/harness.py: the two-step copy job, one inbox,
2 workers) three times, side by side in the same run: without `notify`, with a
json:// webhook on 127.0.0.1 that holds every request unanswered (Apprise's read
timeout set to 120 s), and with a json:// URL on a port where nothing listens.
For each it drops `--files` files at once and measures from the first drop to
the last run recorded in the ledger. Prints the median per mode and its ratio to
"off"; a ratio near 1.0 means notifications cost the drain nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import Daemon, Setup, drop, ledger_states, wait_until  # noqa: E402
from tests.webhook import Webhook, refused_url  # noqa: E402


def drain(root: Path, notify: list[dict], files: int) -> float:
    """Seconds from the first drop to the last of `files` runs in the ledger."""
    setup = Setup(root, notify=notify)
    inbox = Path(setup.inbox()["path"])
    config = setup.write()
    with Daemon(config) as d:
        start = time.monotonic()
        for i in range(files):
            drop(inbox, f"clip-{i:03d}.mov", f"clip {i}\n".encode())
        wait_until(lambda: ledger_states(config).get("succeeded", 0) == files, 300, interval=0.02)
        took = time.monotonic() - start
        assert d.stop() == 0
    return took


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--keep", type=Path, help="work in this folder and leave it (default: a temporary one)")
    args = p.parse_args()

    times: dict[str, list[float]] = {"off": [], "hanging": [], "refusing": []}
    with tempfile.TemporaryDirectory(prefix="chute-notify-") as tmp, Webhook() as hook:
        hook.hold()
        base = args.keep or Path(tmp)
        targets = {"off": [], "hanging": [{"url": hook.url(rto=120)}], "refusing": [{"url": refused_url()}]}
        for n in range(args.rounds):
            for mode, notify in targets.items():
                times[mode].append(drain(base / f"{mode}-{n}", notify, args.files))
        held = hook.received
    off = statistics.median(times["off"])
    print(f"{args.files} files, {args.rounds} rounds; the hanging receiver held {held} requests unanswered")
    print(f"{'mode':<10} {'median s':>9} {'ratio':>6}   rounds")
    for mode, values in times.items():
        median = statistics.median(values)
        print(f"{mode:<10} {median:9.2f} {median / off:6.2f}   {' '.join(f'{v:.2f}' for v in values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
