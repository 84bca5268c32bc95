"""The ledger: one SQLite row per run, on local disk (WAL, busy timeout, explicit transactions)."""

from __future__ import annotations

import enum
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

FILE = "ledger.sqlite3"


class State(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RELEASED = "released"  # put back into its inbox by a stop
    DISCARDED = "discarded"  # another daemon took the claim over
    RETRIED = "retried"  # `chute retry` put the quarantined input back


@dataclass(frozen=True)
class Run:
    run_id: str
    inbox: str
    job: str
    input_name: str
    size: int | None
    sha256: str | None
    state: State
    attempts: int
    claim: str | None
    queued_at: str
    started_at: str | None
    finished_at: str | None
    result: str | None
    error: dict[str, Any] | None
    worker: str | None = None  # where it ran (ran last)

    def as_dict(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["state"] = self.state.value
        return d


_SCHEMA = """
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
);
CREATE INDEX IF NOT EXISTS runs_state ON runs (state);
CREATE INDEX IF NOT EXISTS runs_finished ON runs (finished_at);
"""
_COLUMNS = "run_id, inbox, job, input_name, size, sha256, state, attempts, claim, queued_at, started_at, finished_at, result, error, worker"
_INSERT = f"INSERT INTO runs ({_COLUMNS}) VALUES (?, ?, ?, ?, NULL, NULL, 'queued', 0, ?, ?, NULL, NULL, NULL, NULL, NULL) ON CONFLICT(run_id) DO UPDATE SET state = 'queued', claim = excluded.claim"
_START = "UPDATE runs SET state = 'running', attempts = attempts + 1, started_at = ?, worker = ?, error = NULL WHERE run_id = ?"
# Ledgers written before a column existed get it on open.
_MIGRATIONS = {"worker": "ALTER TABLE runs ADD COLUMN worker TEXT"}
_FINISH = "UPDATE runs SET state = ?, finished_at = ?, result = ?, error = ?, size = COALESCE(?, size), sha256 = COALESCE(?, sha256), worker = COALESCE(?, worker) WHERE run_id = ?"
_REQUEUE = "UPDATE runs SET state = 'queued', error = ? WHERE run_id = ?"
_GET = f"SELECT {_COLUMNS} FROM runs WHERE run_id = ?"
_ACTIVE = f"SELECT {_COLUMNS} FROM runs WHERE state IN ('queued', 'running') ORDER BY queued_at"
_RECENT = f"SELECT {_COLUMNS} FROM runs WHERE state NOT IN ('queued', 'running') ORDER BY finished_at DESC LIMIT ?"
_FAILED = f"SELECT {_COLUMNS} FROM runs WHERE state = 'failed' ORDER BY finished_at"
_COUNTS = "SELECT state, COUNT(*) FROM runs GROUP BY state"
_SET_STATE = "UPDATE runs SET state = ? WHERE run_id = ?"


def _text(value: str | None) -> str | bytes | None:
    """A name or path for SQLite, which takes only valid UTF-8 text.

    A file name that is not UTF-8 (from a Latin-1 client of a share) arrives as surrogate
    escapes; it is stored as its original bytes, and `_row` turns those back into the same str.
    """
    if value is None:
        return None
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")


def _row(row: tuple) -> Run:
    values = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v for v in row]
    values[6] = State(values[6])
    values[13] = json.loads(values[13]) if values[13] else None
    return Run(*values)


class Ledger:
    """The SQL of chute in one place. One connection, used from one thread."""

    def __init__(self, state_dir: Path, *, readonly: bool = False, timeout: float = 30.0):
        path = state_dir / FILE
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout, isolation_level=None)
        else:
            state_dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            self._migrate()
        self.db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")

    def close(self) -> None:
        self.db.close()

    def _migrate(self) -> None:
        have = {row[1] for row in self.db.execute("PRAGMA table_info(runs)")}
        for column, sql in _MIGRATIONS.items():
            if column not in have:
                self._write(sql, ())

    def _write(self, sql: str, args: tuple) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(sql, args)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def queued(self, run_id: str, inbox: str, job: str, input_name: str, claim: str, now: str) -> None:
        self._write(_INSERT, (run_id, _text(inbox), job, _text(input_name), _text(claim), now))

    def started(self, run_id: str, now: str, worker: str | None = None) -> None:
        self._write(_START, (now, worker, run_id))

    def requeued(self, run_id: str, error: dict[str, Any] | None = None) -> None:
        """Back to queued (deferred): `error` says why it waits, for `chute status`."""
        self._write(_REQUEUE, (json.dumps(error) if error else None, run_id))

    def finished(
        self,
        run_id: str,
        state: State,
        now: str,
        result: str | None = None,
        error: dict[str, Any] | None = None,
        size: int | None = None,
        sha256: str | None = None,
        worker: str | None = None,
    ) -> None:
        self._write(
            _FINISH,
            (state.value, now, _text(result), json.dumps(error) if error else None, size, sha256, worker, run_id),
        )

    def set_state(self, run_id: str, state: State) -> None:
        self._write(_SET_STATE, (state.value, run_id))

    def get(self, run_id: str) -> Run | None:
        row = self.db.execute(_GET, (run_id,)).fetchone()
        return _row(row) if row else None

    def active(self) -> list[Run]:
        return [_row(r) for r in self.db.execute(_ACTIVE)]

    def recent(self, limit: int = 20) -> list[Run]:
        return [_row(r) for r in self.db.execute(_RECENT, (limit,))]

    def failed(self) -> Iterator[Run]:
        return (_row(r) for r in self.db.execute(_FAILED))

    def counts(self) -> dict[str, int]:
        return {state: n for state, n in self.db.execute(_COUNTS)}
