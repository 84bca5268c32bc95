"""The stats page's figures, read from a real ledger written through the daemon's own Ledger API."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from chute.ledger import FILE, Ledger, State
from chute.web.stats_page import HOURS, p95, read

NOW = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)


def stamp(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def finish(ledger: Ledger, run_id: str, job: str, state: State, ago: timedelta, figures: dict | None, **kw) -> None:
    t = stamp(NOW - ago)
    ledger.queued(run_id, "/in", job, f"{run_id}.mov", f"/in/.chute/claimed/{run_id}", t)
    ledger.started(run_id, t)
    ledger.finished(run_id, state, t, figures=figures, **kw)


def test_stats_count_the_last_48_hours_by_hour_job_and_module(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ok = {"entries": [["probe", "succeeded", 1.0], ["proxy", "succeeded", 10.0]], "bytes_out": 300}
    bad = {"entries": [["probe", "succeeded", 3.0], ["proxy", "failed", 20.0]], "bytes_out": None}
    try:
        finish(ledger, "a", "ingest", State.SUCCEEDED, timedelta(minutes=5), ok, size=1000)
        finish(ledger, "b", "ingest", State.FAILED, timedelta(minutes=10), bad, size=500)
        finish(ledger, "c", "audio", State.SUCCEEDED, timedelta(hours=3), ok, size=10)
        finish(ledger, "old", "audio", State.FAILED, timedelta(hours=HOURS + 1), bad, size=10**9)
        finish(ledger, "d", "audio", State.RELEASED, timedelta(minutes=1), None)  # released: not a verdict
        finish(ledger, "r", "ingest", State.RETRIED, timedelta(hours=1), bad)  # it failed, then was retried
        # A run finished before the ledger kept figures: its failure still counts against its module.
        finish(ledger, "e", "audio", State.FAILED, timedelta(hours=1), None, error={"reason": "x", "module": "wave"})
    finally:
        ledger.close()

    db = sqlite3.connect(f"file:{tmp_path / FILE}?mode=ro", uri=True)
    try:
        stats = read(db, NOW)
    finally:
        db.close()

    assert len(stats.hours) == HOURS and stats.hours[-1] == ("2026-12-01T12", 1, 1)
    assert stats.hours[-2] == ("2026-12-01T11", 0, 2) and stats.hours[-4] == ("2026-12-01T09", 1, 0)
    assert {job: (r.runs, r.failed) for job, r in stats.by_job.items()} == {"audio": (2, 1), "ingest": (3, 2)}
    assert stats.by_job["audio"].percent == 50.0
    rates = {m: (r.runs, r.failed) for m, r in stats.by_module.items()}
    assert rates == {"probe": (4, 0), "proxy": (4, 2), "wave": (1, 1)}
    assert (stats.timings["proxy"].count, stats.timings["proxy"].mean_s) == (4, 60 / 4)
    assert stats.timings["proxy"].p95_s == 20.0
    assert (stats.bytes_in, stats.bytes_out) == (1510, 600)


def test_p95_is_the_nearest_rank() -> None:
    assert p95([]) == 0.0 and p95([5.0]) == 5.0
    assert p95([float(i) for i in range(1, 101)]) == 95.0
