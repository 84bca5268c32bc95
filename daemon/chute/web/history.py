"""The ledger as the page reads it: read-only, one short query per question, each under a time budget.

Every request opens its own read-only connection (SQLite's `mode=ro`) and closes it before answering, so
no read transaction outlives a request and the daemon's writes never wait on the page.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..ledger import _COLUMNS, FILE, Ledger, Run, State, _row
from ..ledger_schema import NAMES

MAX_LIMIT = 500  # runs on one page or in one answer of /api/runs
EXPORT_LIMIT = 100_000  # runs in one CSV or JSON export
BUDGET_S = 0.12  # a query stopped after this: a name search over a million runs answers with what it found
COUNT_BUDGET_S = 0.05  # a count stopped after this is "unknown" (then "retry all matching" asks to narrow the filter)
STEPS = 5_000  # SQLite virtual machine steps between looks at the clock (about a millisecond)
TRIGRAM = 3  # the shortest name part the ledger's trigram index can find
WINDOW = 20_000  # the newest runs a name part is looked for in by reading them, before the index


@dataclass(frozen=True)
class Filter:
    """What /runs and /api/runs show: each field narrows, None does not."""

    state: State | None = None
    job: str | None = None
    inbox: str | None = None
    q: str | None = None  # a part of the input's name, any case
    since: str | None = None  # ISO times, compared with queued_at
    until: str | None = None

    def where(self, indexed: bool = False) -> tuple[str, list[str]]:
        """The WHERE clause and its arguments; `indexed`: the name part is looked up in the trigram index."""
        terms, args = [], []
        for column, value in (("state", self.state and self.state.value), ("job", self.job), ("inbox", self.inbox)):
            if value:
                terms.append(f"{column} = ?")
                args.append(value)
        if self.since:
            terms.append("queued_at >= ?")
            args.append(self.since)
        if self.until:
            terms.append("queued_at < ?")
            args.append(self.until)
        if self.q and indexed:
            terms.append(f"rowid IN (SELECT rowid FROM {NAMES} WHERE {NAMES} MATCH ?)")
            args.append('"' + self.q.replace('"', '""') + '"')  # one phrase: the part as typed, any case
        elif self.q:
            terms.append("instr(lower(input_name), ?) > 0")
            args.append(self.q.lower())
        return (" WHERE " + " AND ".join(terms)) if terms else "", args


@dataclass(frozen=True)
class Page:
    """Runs of a filter, newest first; `complete` is False when the time budget stopped the search."""

    runs: list[Run]
    complete: bool


def _none_yet(state_dir: Path) -> bool:
    """No ledger yet (the daemon has not run with this config): no runs, rather than an error."""
    return not (state_dir / FILE).exists()


@contextmanager
def opened(state_dir: Path) -> Iterator[Ledger]:
    ledger = Ledger(state_dir, readonly=True, timeout=2.0)
    try:
        yield ledger
    finally:
        ledger.close()


def _budget(db: sqlite3.Connection, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    db.set_progress_handler(lambda: int(time.monotonic() > deadline), STEPS)


def _indexed(db: sqlite3.Connection, where: Filter) -> bool:
    """Whether the filter's name part can be looked up in the trigram index (ledger_schema._v5_names)."""
    if where.q is None or len(where.q) < TRIGRAM:
        return False
    return db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (NAMES,)).fetchone() is not None


def runs(state_dir: Path, where: Filter, limit: int, offset: int = 0, budget: float = BUDGET_S) -> Page:
    """Up to `limit` runs of the filter, newest first, from `offset`.

    A name part is first looked for among the newest `WINDOW` runs, where a part that many names
    share fills the page at once; short of a full page there, the trigram index finds every run
    that has it, however old, without reading the others.
    """
    if _none_yet(state_dir):
        return Page([], complete=True)
    with opened(state_dir) as ledger:
        if not _indexed(ledger.db, where):
            return _select(ledger.db, where.where(), limit, offset, budget)
        started = time.monotonic()
        newest = _select(ledger.db, where.where(), limit, offset, budget / 2, window=WINDOW)
        if newest.complete and len(newest.runs) == limit:
            return newest
        left = budget - (time.monotonic() - started)
        return _select(ledger.db, where.where(indexed=True), limit, offset, left)


def _select(
    db: sqlite3.Connection, where: tuple[str, list[str]], limit: int, offset: int, budget: float, window: int = 0
) -> Page:
    """The runs of a WHERE clause, newest first; `window`: among the newest `window` runs only."""
    sql_where, args = where
    runs = f"(SELECT * FROM runs ORDER BY queued_at DESC LIMIT {int(window)}) AS runs" if window else "runs"
    sql = f"SELECT {_COLUMNS} FROM {runs}{sql_where} ORDER BY queued_at DESC LIMIT ? OFFSET ?"
    found: list[Run] = []
    _budget(db, budget)
    try:
        for row in db.execute(sql, [*args, limit, offset]):
            found.append(_row(row))
    except sqlite3.OperationalError as exc:
        if "interrupted" not in str(exc):
            raise
        return Page(found, complete=False)
    return Page(found, complete=True)


def count(state_dir: Path, where: Filter, budget: float = COUNT_BUDGET_S) -> int | None:
    """How many runs the filter matches; None when counting would take longer than the budget."""
    if _none_yet(state_dir):
        return 0
    with opened(state_dir) as ledger:
        sql_where, args = where.where(indexed=_indexed(ledger.db, where))
        _budget(ledger.db, budget)
        try:
            return int(ledger.db.execute(f"SELECT COUNT(*) FROM runs{sql_where}", args).fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "interrupted" not in str(exc):
                raise
            return None


def get(state_dir: Path, run_id: str) -> Run | None:
    if _none_yet(state_dir):
        return None
    with opened(state_dir) as ledger:
        return ledger.get(run_id)


def running(state_dir: Path) -> list[Run]:
    """The running runs (by the (state, queued_at) index: a backlog of queued ones is never read)."""
    if _none_yet(state_dir):
        return []
    with opened(state_dir) as ledger:
        sql = f"SELECT {_COLUMNS} FROM runs WHERE state = 'running' ORDER BY queued_at LIMIT 1000"
        return [_row(r) for r in ledger.db.execute(sql)]


def today(state_dir: Path, now: datetime | None = None) -> dict[str, dict[str, int]]:
    """Per inbox, how many runs finished since local midnight, by state ({inbox: {"succeeded": n, ...}})."""
    now = now or datetime.now(UTC)
    midnight = now.astimezone().replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
    since = midnight.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    counts: dict[str, dict[str, int]] = {}
    if _none_yet(state_dir):
        return counts
    with opened(state_dir) as ledger:
        # By finished_at: without ANALYZE the planner would rather walk runs_inbox for the GROUP BY, all of it.
        sql = "SELECT inbox, state, COUNT(*) FROM runs INDEXED BY runs_finished WHERE finished_at >= ? GROUP BY 1, 2"
        for inbox, state, n in ledger.db.execute(sql, (since,)):
            key = inbox.decode("utf-8", "surrogateescape") if isinstance(inbox, bytes) else inbox
            counts.setdefault(key, {})[state] = n
    return counts


def jobs(state_dir: Path) -> list[str]:
    """The jobs of the ledger's runs, for the history's filter (one index walk per job: a skip scan)."""
    if _none_yet(state_dir):
        return []
    with opened(state_dir) as ledger:
        found: list[str] = []
        last = ""
        while True:
            row = ledger.db.execute("SELECT MIN(job) FROM runs WHERE job > ?", (last,)).fetchone()
            if row[0] is None or len(found) >= 200:
                return found
            found.append(last := row[0])
