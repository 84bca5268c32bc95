"""Claim-to-run of a folder delivery (contract §12): from `file.claimed` to `run.started`, and the settle walk.

Usage: .venv/bin/python bench/folder_claim.py [--files 500] [--size 4096] [--rounds 5]

Each round drops one folder of `--files` files of `--size` bytes into a `unit: folder`
inbox (events mode) whose job takes the whole folder (`type: folder`, the listing module
of tests/acceptance/test_packages.py) and reads from the daemon's JSON log: claim to run
start (staging included: a tree of links, or a copy where chute runs as root), and the
time one settle walk of the folder takes. No checksum is verified here (not built yet).
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

from chute import folders  # noqa: E402

from tests.acceptance.test_packages import card, folder_setup  # noqa: E402
from tests.harness import Daemon, event_time, files, wait_until  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    gaps, walks = [], []
    with tempfile.TemporaryDirectory(prefix="chute-bench-") as tmp:
        setup, inbox = folder_setup(Path(tmp), watch="events")
        config = setup.write()
        path, outbox = Path(inbox["path"]), Path(inbox["outbox"])
        path.mkdir()
        with Daemon(config) as d:
            for n in range(args.rounds):
                name = f"CARD{n:02d}"
                staged = Path(tmp) / name
                card(
                    staged,
                    {f"CLIPS/{i // 100:02d}/C{i:04d}.mov": bytes([i % 256]) * args.size for i in range(args.files)},
                )
                t0 = time.perf_counter()
                folders.walk(str(staged), None)
                walks.append(time.perf_counter() - t0)
                staged.rename(path / name)  # dropped whole: what is measured is the daemon's own time
                wait_until(lambda name=name: name in files(outbox), 120)
                claimed = d.wait_event("file.claimed", file=name)[0]
                started = d.wait_event("run.started", file=name)[0]
                gaps.append(event_time(started) - event_time(claimed))
            assert d.stop() == 0
    print(f"{args.files} files of {args.size} B per folder, {args.rounds} rounds")
    print("| claim to run start p50 | max | one settle walk p50 |")
    print("|---|---|---|")
    print(f"| {statistics.median(gaps):.3f} s | {max(gaps):.3f} s | {statistics.median(walks) * 1000:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
