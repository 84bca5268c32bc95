"""What the ledger costs the daemon per run: its three writes (queued, started, finished), with and without
the trigram index of names that ledger version 5 keeps for `chute web`'s name search.

Usage: .venv/bin/python bench/ledger_writes.py [--runs 3000] [--rounds 3]

Each round writes `--runs` runs through the daemon's own Ledger API into a fresh ledger twice: once as
made (the index's triggers in place), once with the triggers dropped (what version 4 wrote), and prints
the CPU and wall time per run of each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from chute.ledger import Ledger, State

TRIGGERS = ("runs_named_insert", "runs_named_delete", "runs_named_update")


def per_run(runs: int, indexed: bool) -> tuple[float, float]:
    """Microseconds of CPU and of wall time per run."""
    with tempfile.TemporaryDirectory(prefix="chute-bench-ledger-") as folder:
        ledger = Ledger(Path(folder))
        try:
            if not indexed:
                for trigger in TRIGGERS:
                    ledger.db.execute(f"DROP TRIGGER {trigger}")
            cpu, wall = time.process_time(), time.perf_counter()
            for i in range(runs):
                run_id = f"20261202T000000Z-{i:06x}"
                name = f"Interview_{i:05d}_final_grade.mov"
                ledger.queued(run_id, "/in", "job", name, f"/in/.chute/claimed/{run_id}", "2026-12-02T00:00:00.000Z")
                ledger.started(run_id, "2026-12-02T00:00:01.000Z")
                ledger.finished(run_id, State.SUCCEEDED, "2026-12-02T00:00:02.000Z")
            return (time.process_time() - cpu) * 1e6 / runs, (time.perf_counter() - wall) * 1e6 / runs
        finally:
            ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.rounds):
        (plain_cpu, plain_wall), (cpu, wall) = per_run(args.runs, False), per_run(args.runs, True)
        print(
            f"per run: without the name index {plain_cpu:.0f} us CPU, {plain_wall:.0f} us wall;"
            f" with it {cpu:.0f} us CPU, {wall:.0f} us wall ({cpu / plain_cpu:.2f}x CPU)"
        )


if __name__ == "__main__":
    main()
