"""What `chute status` costs on a big ledger: wall time of the whole command, text and --json.

Usage: .venv/bin/python bench/status.py [--runs 1000000] [--repeat 7] [--keep DIR]

With `--keep DIR`, the ledger and config are left in DIR, and a later run with the same
DIR reuses them (opening the ledger once first, which migrates it to this chute's schema).

Builds a ledger of `--runs` runs (most succeeded, some failed with a reason, a few
released, discarded and retried, 50 queued and 4 running; finished over the last 90
days) with the `Ledger` of the chute this Python imports, which makes its schema, then
fills it with one executemany in one transaction. A config over the repository's
bundled modules and jobs points at it. Then `chute status` and `chute status --json`
(the `chute` beside this Python) are each run `--repeat` times as whole processes
after one warm-up run, and the median and fastest wall times are printed, with the
largest resident size of any of them. The issue's target: 0.3 s on 1,000,000 runs.

The chute of another checkout is measured by running this file with its Python,
e.g. `/work/main/.venv/bin/python bench/status.py` for main.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from chute.ledger import FILE, Ledger

ROOT = Path(__file__).resolve().parents[1]
CHUTE = Path(sys.executable).with_name("chute")
TARGET_S = 0.3
INSERT = "INSERT INTO runs (run_id, inbox, job, input_name, size, sha256, state, attempts, claim, queued_at,"
INSERT += " started_at, finished_at, result, error, worker) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
STATES = ["succeeded"] * 90 + ["failed"] * 7 + ["released", "discarded", "retried"]


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rows(n: int, now: datetime):
    """`n` runs, oldest first, spread over the last 90 days; the last 54 are queued or running."""
    rnd = random.Random(21)
    step = timedelta(days=90) / n
    for i in range(n):
        queued = now - timedelta(days=90) + step * i
        state = "queued" if i >= n - 50 else "running" if i >= n - 54 else rnd.choice(STATES)
        active = state in ("queued", "running")
        stamp = queued.strftime("%Y%m%dT%H%M%SZ")
        name = f"clip-{i:07d}.mov"
        error = json.dumps({"reason": "exit 3", "step": "step1", "module": "example_module"})
        yield (
            f"{stamp}-{i:06x}",
            f"/srv/media/inbox/library-{i % 8}",
            "example_job",
            name,
            None if active else rnd.randint(10**6, 10**9),
            None if active else f"{rnd.getrandbits(256):064x}",
            state,
            0 if state == "queued" else 1,
            f"/srv/media/inbox/library-{i % 8}/.chute/claimed/{stamp}-{i:06x}/{name}",
            iso(queued),
            None if state == "queued" else iso(queued + timedelta(seconds=1)),
            None if active else iso(queued + timedelta(seconds=40)),
            None if active else f"/srv/media/{'quarantine' if state == 'failed' else 'outbox'}/{stamp}-{name}",
            error if state == "failed" else None,
            None if state == "queued" else "media-01",
        )


def build(folder: Path, n: int) -> Path:
    """A state_dir holding a ledger of `n` runs, and a config that points at it; returns the config."""
    state = folder / "state"
    Ledger(state).close()  # the schema, as the chute under test makes it
    db = sqlite3.connect(state / FILE, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.executemany(INSERT, rows(n, datetime.now(UTC)))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    config = folder / "config.yaml"
    config.write_text(
        f"modules_path: [{json.dumps(str(ROOT / 'modules'))}]\njobs_path: [{json.dumps(str(ROOT / 'jobs'))}]\n"
        f"state_dir: {json.dumps(str(state))}\nwork_dir: {json.dumps(str(folder / 'work'))}\ninboxes: []\n"
    )
    return config


def once(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of `argv`."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def timed(argv: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of `repeat` runs of `argv`, after one warm-up run (the page cache, .pyc files)."""
    once(argv)
    runs = [once(argv) for _ in range(repeat)]
    return [w for w, _ in runs], [c for _, c in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--keep",
        type=Path,
        help="build the ledger here and leave it; reuse the one already there (default: a temp folder)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chute-bench-status-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if (folder / "config.yaml").is_file():
            config = folder / "config.yaml"
            Ledger(folder / "state").close()  # migrated, when the chute under test is newer than its maker
            print(f"ledger: reused from {folder}, opened in {time.perf_counter() - start:.1f} s")
        else:
            config = build(folder, args.runs)
            print(f"ledger: {args.runs} runs, built in {time.perf_counter() - start:.1f} s")
        print(f"ledger size: {(folder / 'state' / FILE).stat().st_size / 2**20:.0f} MiB")
        print(
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times grow with it; CPU times less)"
        )
        for what, argv in [
            ("chute status", [str(CHUTE), "status", "--config", str(config)]),
            ("chute status --json", [str(CHUTE), "status", "--json", "--config", str(config)]),
            ("chute --version", [str(CHUTE), "--version"]),  # the floor: Python and chute's imports
        ]:
            wall, cpu = timed(argv, args.repeat)
            median = statistics.median(wall)
            verdict = "" if what == "chute --version" else "  ok" if median <= TARGET_S else f"  over {TARGET_S} s"
            print(
                f"{what:<20} wall median {median:.3f} s, fastest {min(wall):.3f} s;"
                f" CPU median {statistics.median(cpu):.3f} s{verdict}"
            )
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"largest resident size of any of them: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
