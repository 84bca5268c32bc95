"""The ledger's schema and its history: the migrations that take a ledger of any earlier chute to this one's.

Each migration runs once per ledger, in one transaction with the new PRAGMA user_version (ledger.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

_TABLE = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    inbox       TEXT NOT NULL,
    job         TEXT NOT NULL,
    input_name  TEXT NOT NULL,
    size        INTEGER,
    sha256      TEXT,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    claim       TEXT,
    queued_at   TEXT NOT NULL,
    started_at  TEXT,
    finished_at TEXT,
    result      TEXT,
    error       TEXT,
    worker      TEXT
)"""
# `chute status` reads the counts of each state from here, kept by triggers: a GROUP BY over a
# million runs would read all of them (issue 21: 0.57 s on 1,000,000 runs).
_COUNTS_TABLE = (
    "CREATE TABLE run_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT INTO run_counts SELECT state, COUNT(*) FROM runs GROUP BY state",
    "CREATE TRIGGER runs_counted_insert AFTER INSERT ON runs BEGIN"
    " INSERT INTO run_counts VALUES (NEW.state, 1) ON CONFLICT(state) DO UPDATE SET n = n + 1; END",
    "CREATE TRIGGER runs_counted_delete AFTER DELETE ON runs BEGIN"
    " UPDATE run_counts SET n = n - 1 WHERE state = OLD.state; END",
    "CREATE TRIGGER runs_counted_update AFTER UPDATE OF state ON runs WHEN OLD.state IS NOT NEW.state BEGIN"
    " UPDATE run_counts SET n = n - 1 WHERE state = OLD.state;"
    " INSERT INTO run_counts VALUES (NEW.state, 1) ON CONFLICT(state) DO UPDATE SET n = n + 1; END",
)


def _v1_runs(db: sqlite3.Connection) -> None:
    """The runs table as chute wrote it before the ledger had a version (user_version 0)."""
    db.execute(_TABLE)
    if "worker" not in {row[1] for row in db.execute("PRAGMA table_info(runs)")}:
        db.execute("ALTER TABLE runs ADD COLUMN worker TEXT")  # ledgers older still lack it
    db.execute("CREATE INDEX IF NOT EXISTS runs_state ON runs (state)")
    db.execute("CREATE INDEX IF NOT EXISTS runs_finished ON runs (finished_at)")


def _v2_status(db: sqlite3.Connection) -> None:
    """What `chute status` and pruning read without a scan: active runs by age, counts by state."""
    db.execute("DROP INDEX IF EXISTS runs_state")
    db.execute("CREATE INDEX runs_active ON runs (state, queued_at)")
    for sql in _COUNTS_TABLE:
        db.execute(sql)


def _v3_web(db: sqlite3.Connection) -> None:
    """What `chute web`'s history reads without a scan: the newest runs, of one job, of one inbox (issue 23)."""
    db.execute("CREATE INDEX runs_queued ON runs (queued_at)")
    db.execute("CREATE INDEX runs_job ON runs (job, queued_at)")
    db.execute("CREATE INDEX runs_inbox ON runs (inbox, queued_at)")


def _v4_figures(db: sqlite3.Connection) -> None:
    """A finished run's figures for the web page's stats: its entries' modules and times, the bytes it wrote."""
    db.execute("ALTER TABLE runs ADD COLUMN figures TEXT")


NAMES = "runs_names"  # the inputs' names in a trigram index: a part of a name is found without a scan
_NAMES_TABLE = (
    f"CREATE VIRTUAL TABLE {NAMES} USING fts5(input_name, content='runs', content_rowid='rowid', tokenize='trigram')",
    f"CREATE TRIGGER runs_named_insert AFTER INSERT ON runs BEGIN"
    f" INSERT INTO {NAMES} (rowid, input_name) VALUES (NEW.rowid, NEW.input_name); END",
    f"CREATE TRIGGER runs_named_delete AFTER DELETE ON runs BEGIN"
    f" INSERT INTO {NAMES} ({NAMES}, rowid, input_name) VALUES ('delete', OLD.rowid, OLD.input_name); END",
    f"CREATE TRIGGER runs_named_update AFTER UPDATE OF input_name ON runs BEGIN"
    f" INSERT INTO {NAMES} ({NAMES}, rowid, input_name) VALUES ('delete', OLD.rowid, OLD.input_name);"
    f" INSERT INTO {NAMES} (rowid, input_name) VALUES (NEW.rowid, NEW.input_name); END",
    f"INSERT INTO {NAMES} ({NAMES}) VALUES ('rebuild')",
)


def trigram_index_possible(db: sqlite3.Connection) -> bool:
    """Whether this SQLite has FTS5 with its trigram tokenizer (3.34 and later, where FTS5 was built in)."""
    try:
        db.execute("CREATE VIRTUAL TABLE temp.trigram_probe USING fts5(x, tokenize='trigram')")
    except sqlite3.OperationalError:
        return False
    db.execute("DROP TABLE temp.trigram_probe")
    return True


def _v5_names(db: sqlite3.Connection) -> None:
    """A name search of `chute web` over a long history, answered by an index (issue 23).

    Where this SQLite lacks it, the ledger goes on without the index (the page scans, within its budget).
    """
    if trigram_index_possible(db):
        for sql in _NAMES_TABLE:
            db.execute(sql)


# The schema's history: MIGRATIONS[n] takes a ledger from version n to n + 1 (PRAGMA user_version).
# Append only: a released migration never changes, or ledgers already past it would differ.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1_runs, _v2_status, _v3_web, _v4_figures, _v5_names)
VERSION = len(MIGRATIONS)
