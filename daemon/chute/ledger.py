"""The ledger: one SQLite row per run, on local disk (WAL, busy timeout, explicit transactions)."""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .errors import ChuteError
from .ledger_schema import MIGRATIONS, VERSION

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


_COLUMNS = (
    "run_id, inbox, job, input_name, size, sha256, state, attempts, claim, queued_at, started_at, finished_at,"
    " result, error, worker"
)
_INSERT = (
    f"INSERT INTO runs ({_COLUMNS}) VALUES (?, ?, ?, ?, NULL, NULL, 'queued', 0, ?, ?, NULL, NULL, NULL, NULL, NULL)"
    " ON CONFLICT(run_id) DO UPDATE SET state = 'queued', claim = excluded.claim"
)
_START = (
    "UPDATE runs SET state = 'running', attempts = attempts + 1, started_at = ?, worker = ?, error = NULL"
    " WHERE run_id = ?"
)
_FINISH = (
    "UPDATE runs SET state = ?, finished_at = ?, result = ?, error = ?, size = COALESCE(?, size),"
    " sha256 = COALESCE(?, sha256), worker = COALESCE(?, worker), figures = ? WHERE run_id = ?"
)
_REQUEUE = "UPDATE runs SET state = 'queued', error = ? WHERE run_id = ?"
_GET = f"SELECT {_COLUMNS} FROM runs WHERE run_id = ?"
_ACTIVE = f"SELECT {_COLUMNS} FROM runs WHERE state IN ('queued', 'running') ORDER BY queued_at"
_RECENT = f"SELECT {_COLUMNS} FROM runs WHERE state NOT IN ('queued', 'running') ORDER BY finished_at DESC LIMIT ?"
_FAILED = f"SELECT {_COLUMNS} FROM runs WHERE state = 'failed' ORDER BY finished_at"
_COUNTS = "SELECT state, n FROM run_counts WHERE n > 0"
_COUNTS_V1 = "SELECT state, COUNT(*) FROM runs GROUP BY state"  # a ledger not yet migrated, read-only
# Finished runs older than a time, in batches: each its own short transaction, so a first prune
# of years of history never holds the write lock for long.
_PRUNE = (
    "DELETE FROM runs WHERE rowid IN (SELECT rowid FROM runs WHERE finished_at < ?"
    " AND state NOT IN ('queued', 'running') LIMIT ?)"
)
_SET_STATE = "UPDATE runs SET state = ? WHERE run_id = ?"
_RETRIED = "UPDATE runs SET state = 'retried', error = ? WHERE run_id = ?"
# The run that claimed a retried input: the same name, queued in its inbox after the retry (read rarely: a scan).
_RETRY_OF = "SELECT run_id FROM runs WHERE inbox = ? AND input_name = ? AND queued_at >= ? ORDER BY queued_at LIMIT 1"


def prune_before(keep_days: int, now: datetime) -> str:
    """The finished_at before which a run is pruned, in the ledger's own ISO form (run.utcnow)."""
    cutoff = now.astimezone(UTC) - timedelta(days=keep_days)
    return cutoff.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def _row(row: tuple[Any, ...]) -> Run:
    values: list[Any] = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v for v in row]
    values[6] = State(values[6])
    values[13] = json.loads(values[13]) if values[13] else None
    return Run(*values)


class Ledger:
    """The SQL of chute in one place. One connection, used from one thread."""

    def __init__(self, state_dir: Path, *, readonly: bool = False, timeout: float = 30.0):
        self.path = state_dir / FILE
        if readonly:
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=timeout, isolation_level=None)
        else:
            state_dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        self.db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        try:
            self.version = self._version()
            if not readonly:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self._migrate()
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def _version(self) -> int:
        """The schema version; a ledger from a newer chute is refused before anything writes to it."""
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > VERSION:
            raise ChuteError(
                f"ledger {self.path} has schema version {version}, newer than this chute's {VERSION}:"
                " it was written by a newer chute; run that one, or upgrade"
            )
        return version

    def _migrate(self) -> None:
        """Each migration still missing, in order, each in one transaction with its new version."""
        while self.version < VERSION:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.version = self._version()  # another process may have migrated meanwhile
                if self.version < VERSION:
                    MIGRATIONS[self.version](self.db)
                    self.version += 1
                    self.db.execute(f"PRAGMA user_version={self.version}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

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
        figures: dict[str, Any] | None = None,
    ) -> None:
        """The run ended: its state, result folder, error, input and `figures` (for the web page's stats)."""
        err, fig = json.dumps(error) if error else None, json.dumps(figures) if figures else None
        self._write(_FINISH, (state.value, now, _text(result), err, size, sha256, worker, fig, run_id))

    def set_state(self, run_id: str, state: State) -> None:
        self._write(_SET_STATE, (state.value, run_id))

    def retried(self, run_id: str, name: str, now: str) -> None:
        """`chute retry` put the input back as `name`: kept in its error, so a second retry says what became of it."""
        run = self.get(run_id)
        error = dict((run.error if run else None) or {}) | {"retried": {"at": now, "name": name}}
        self._write(_RETRIED, (json.dumps(error), run_id))

    def retry_of(self, run: Run, name: str, since: str) -> str | None:
        """The id of the run that claimed `run`'s input after `chute retry` put it back as `name`."""
        row = self.db.execute(_RETRY_OF, (_text(run.inbox), _text(name), since)).fetchone()
        return row[0] if row else None

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
        return {state: n for state, n in self.db.execute(_COUNTS if self.version >= 2 else _COUNTS_V1)}

    def prune(self, before: str, batch: int = 5000) -> int:
        """Delete finished runs that finished before `before` (an ISO time); queued and running stay."""
        pruned = 0
        while True:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                deleted = self.db.execute(_PRUNE, (before, batch)).rowcount
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            pruned += deleted
            if deleted < batch:
                return pruned
