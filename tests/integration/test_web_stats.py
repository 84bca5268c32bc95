"""The stats page's figures, read from a real ledger written through the daemon's own Ledger API."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from chute.ledger import FILE, Ledger, State
from chute.web.stats_page import HOURS, HourCache, p95, read

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ledger-v1.sqlite"
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


def test_past_hours_are_read_once_and_the_current_hour_every_time(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ok = {"entries": [["probe", "succeeded", 1.0]], "bytes_out": 1}
    db = sqlite3.connect(f"file:{tmp_path / FILE}?mode=ro", uri=True)
    cache = HourCache()
    try:
        finish(ledger, "a", "ingest", State.SUCCEEDED, timedelta(hours=2), ok)
        finish(ledger, "b", "ingest", State.SUCCEEDED, timedelta(minutes=1), ok)
        first = read(db, NOW, cache)
        assert first == read(db, NOW)  # the same figures as without a cache
        # A row appearing in a past hour (only a clock set back could do it) shows the cache is used;
        # the current hour's new run is counted at once.
        finish(ledger, "late", "ingest", State.FAILED, timedelta(hours=2), ok)
        finish(ledger, "c", "ingest", State.FAILED, timedelta(minutes=2), ok)
        second = read(db, NOW, cache)
        assert (second.by_job["ingest"].runs, second.by_job["ingest"].failed) == (3, 1)
        assert second.hours[-3] == first.hours[-3] == ("2026-12-01T10", 1, 0)
        assert read(db, NOW).by_job["ingest"].runs == 4
        # An hour later, the hour that was current is read once more, complete, and then kept.
        later = read(db, NOW + timedelta(hours=1), cache)
        assert later.hours[-2] == ("2026-12-01T12", 1, 1) and later.by_job["ingest"].runs == 3
    finally:
        db.close()
        ledger.close()


def test_a_ledger_not_yet_migrated_still_gives_its_stats() -> None:
    """The web page reads the ledger as it is: one written before figures counts by job, failures by module."""
    db = sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True)
    try:
        stats = read(db, datetime(2026, 12, 1, 12, tzinfo=UTC))
    finally:
        db.close()
    assert (stats.by_job["example_job"].runs, stats.by_job["example_job"].failed) == (3, 2)
    assert {m: (r.runs, r.failed) for m, r in stats.by_module.items()} == {"example_module": (1, 1)}
    assert stats.timings == {} and stats.bytes_out == 0
