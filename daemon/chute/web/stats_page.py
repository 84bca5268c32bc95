"""The stats page's figures, read from the ledger over the last 48 hours in one pass."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import charts, history
from .site import site

HOURS = 48
# One range scan of the finished_at index (`+state` keeps SQLite off the state index, which would scan
# every finished run): a million-run ledger holds a few ten thousand runs in 48 hours.
_WINDOW = (
    "SELECT substr(finished_at, 1, 13), job, state, size, error, {figures} FROM runs"
    " WHERE finished_at >= ? AND +state IN ('succeeded', 'failed', 'retried')"
)


@dataclass(frozen=True)
class Rate:
    """How many ran and how many of those failed."""

    runs: int
    failed: int

    @property
    def percent(self) -> float:
        return 100.0 * self.failed / self.runs if self.runs else 0.0


@dataclass(frozen=True)
class Timing:
    """A module's entries: how many, mean and 95th percentile of their time."""

    count: int
    mean_s: float
    p95_s: float


@dataclass(frozen=True)
class Stats:
    """What the stats page draws: runs per hour, failure rates, times per module, bytes in and out."""

    hours: list[tuple[str, int, int]]  # (hour, succeeded, failed), oldest first
    by_job: dict[str, Rate] = field(default_factory=dict)
    by_module: dict[str, Rate] = field(default_factory=dict)
    timings: dict[str, Timing] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0


def _hour(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H")


def p95(values: list[float]) -> float:
    """The 95th percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)] if ordered else 0.0


class _Tally:
    """The figures of some runs (one hour's, or the window's)."""

    def __init__(self) -> None:
        self.hours: Counter[tuple[str, bool]] = Counter()
        self.jobs: Counter[tuple[str, bool]] = Counter()
        self.modules: Counter[tuple[str, bool]] = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.bytes_in = self.bytes_out = 0

    def add(self, hour: str, job: str, state: str, size: int | None, error: str | None, figures: str | None) -> None:
        failed = state != "succeeded"  # a retried run failed first
        self.hours[hour, failed] += 1
        self.jobs[job, failed] += 1
        self.bytes_in += size or 0
        fig = json.loads(figures) if figures else {}
        self.bytes_out += fig.get("bytes_out") or 0
        for module, status, duration in fig.get("entries", ()):
            self.modules[module, status == "failed"] += 1
            self.times[module].append(duration)
        if failed and not fig and error:  # a run recorded before figures were: its error names the module
            module = json.loads(error).get("module")
            if module:
                self.modules[module, True] += 1

    def merge(self, other: _Tally) -> None:
        self.hours.update(other.hours)
        self.jobs.update(other.jobs)
        self.modules.update(other.modules)
        for module, times in other.times.items():
            self.times[module].extend(times)
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out


class HourCache:
    """Each past hour's tally, read from the ledger once: a finished run's row no longer changes its figures.

    (A failed run later retried changes its state, from one failure to another.) A million-run ledger has
    some 500 runs an hour: after the first visit, a visit reads the current hour's alone.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hours: dict[str, _Tally] = {}


_CACHES: dict[str, HourCache] = {}


def _rates(counts: Counter[tuple[str, bool]]) -> dict[str, Rate]:
    names = sorted({name for name, _ in counts})
    return {n: Rate(counts[n, False] + counts[n, True], counts[n, True]) for n in names}


def _tallies(db: sqlite3.Connection, hours: list[str], final: str, cache: HourCache) -> list[_Tally]:
    """The window's tallies: the cache's past hours, and the rest read in one range scan from the first missing."""
    with cache.lock:
        first = next((h for h in hours if h not in cache.hours), hours[-1])
        kept = {h: cache.hours[h] for h in hours if h < first}
        fresh: dict[str, _Tally] = defaultdict(_Tally)
        # A ledger the daemon has not yet migrated (the web page reads it as it is) has no figures.
        figures = "figures" if any(c[1] == "figures" for c in db.execute("PRAGMA table_info(runs)")) else "NULL"
        for row in db.execute(_WINDOW.format(figures=figures), (first,)):
            fresh[row[0]].add(*row)
        cache.hours = kept | {h: fresh.get(h) or _Tally() for h in hours if first <= h < final}
    return [*kept.values(), *fresh.values()]


def read(db: sqlite3.Connection, now: datetime, cache: HourCache | None = None) -> Stats:
    """The last 48 hours of finished runs (succeeded, failed, or failed and retried since), up to `now` (UTC)."""
    start = (now - timedelta(hours=HOURS - 1)).replace(minute=0, second=0, microsecond=0)
    hours = [_hour(start + timedelta(hours=i)) for i in range(HOURS)]
    total = _Tally()
    # An hour is complete a minute after it ends (a run's finished_at is its ledger write, give or take).
    for tally in _tallies(db, hours, _hour(now - timedelta(minutes=1)), cache or HourCache()):
        total.merge(tally)
    timings = {m: Timing(len(v), sum(v) / len(v), p95(v)) for m, v in sorted(total.times.items())}
    return Stats(
        hours=[(h, total.hours[h, False], total.hours[h, True]) for h in hours],
        by_job=_rates(total.jobs),
        by_module=_rates(total.modules),
        timings=timings,
        bytes_in=total.bytes_in,
        bytes_out=total.bytes_out,
    )


def seconds(s: float) -> str:
    """A module's time as read at a glance: `0.42 s`, `12.5 s`."""
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def size_text(n: int) -> str:
    """Bytes as a person reads them: `1.5 GB` (powers of 1000, as disks are sold)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def charts_of(stats: Stats) -> dict[str, str]:
    """The stats page's charts, as SVG."""
    hours = [
        charts.Bar(h[11:] + ":00", ok + bad, f"{h[:10]} {h[11:]}:00: {ok} succeeded, {bad} failed")
        for h, ok, bad in stats.hours
    ]
    rate = [charts.Bar(n, r.percent, f"{r.percent:.1f} % of {r.runs}") for n, r in stats.by_job.items()]
    module_rate = [charts.Bar(n, r.percent, f"{r.percent:.1f} % of {r.runs}") for n, r in stats.by_module.items()]
    times = [
        charts.Bar(m, t.mean_s, f"mean {seconds(t.mean_s)}, p95 {seconds(t.p95_s)} ({t.count})")
        for m, t in stats.timings.items()
    ]
    return {
        "hours": charts.columns("Runs per hour (UTC), last 48 hours", hours),
        "by_job": charts.rows("Failure rate by job", rate, top=100, colour="#c62828"),
        "by_module": charts.rows("Failure rate by module", module_rate, top=100, colour="#c62828"),
        "times": charts.rows("Time per module (mean; p95 written)", times),
    }


def stats_page(request: Request) -> Response:
    config = site(request).config
    with history.opened(config.state_dir) as ledger:
        stats = read(ledger.db, datetime.now(UTC), _CACHES.setdefault(str(config.state_dir), HourCache()))
    context = {
        "charts": charts_of(stats),
        "stats": stats,
        "bytes_in": size_text(stats.bytes_in),
        "bytes_out": size_text(stats.bytes_out),
    }
    return site(request).page(request, "stats.html", context)


ROUTES = [Route("/stats", stats_page)]
