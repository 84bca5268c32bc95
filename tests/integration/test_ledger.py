"""The ledger's schema version, its migrations, and pruning (issue 21), on real SQLite files.

tests/fixtures/ledger-v1.sqlite was written by chute before the ledger had a schema
version (commit 3d708bf), through its own Ledger API: tests/fixtures/make_ledger_v1.py
made it and says how to remake it.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from chute.errors import ChuteError
from chute.ledger import FILE, VERSION, Ledger, State, prune_before

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ledger-v1.sqlite"
CHUTE = Path(sys.executable).with_name("chute")


def raw_rows(path: Path) -> dict[str, tuple]:
    db = sqlite3.connect(path)
    try:
        return {row[0]: row for row in db.execute("SELECT * FROM runs")}
    finally:
        db.close()


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def old_ledger(tmp_path: Path) -> Path:
    """A copy of the fixture as a state_dir's ledger."""
    state = tmp_path / "state"
    state.mkdir()
    shutil.copyfile(FIXTURE, state / FILE)
    return state


def test_a_ledger_written_before_versions_opens_and_keeps_every_row(old_ledger: Path) -> None:
    before = raw_rows(old_ledger / FILE)
    assert user_version(old_ledger / FILE) == 0
    assert {r[6] for r in before.values()} == {s.value for s in State}, "the fixture has a run in every state"
    ledger = Ledger(old_ledger)
    try:
        assert ledger.version == VERSION
        runs = {run_id: ledger.get(run_id) for run_id in before}
        counts = ledger.counts()
    finally:
        ledger.close()
    after = raw_rows(old_ledger / FILE)
    assert {k: row[: len(before[k])] for k, row in after.items()} == before  # later columns (figures) are added
    assert all(row[len(before[k]) :] == (None,) for k, row in after.items())
    assert user_version(old_ledger / FILE) == VERSION
    assert runs["20261201T030000Z-000003"].error == {"reason": "exit 1", "step": "step1", "module": "example_module"}
    assert runs["20261201T090000Z-latin1"].input_name == "caf\udce9.mp4"  # not UTF-8, stored as its bytes
    assert all(run is not None and run.state.value == before[run_id][6] for run_id, run in runs.items())
    assert counts == {"queued": 2, **{s.value: 1 for s in State if s is not State.QUEUED}}


def test_status_reads_a_ledger_not_yet_migrated(old_ledger: Path) -> None:
    """`chute status` opens read-only: before the daemon migrated the ledger, it still answers."""
    ledger = Ledger(old_ledger, readonly=True)
    try:
        assert ledger.version == 0
        assert sum(ledger.counts().values()) == 8
        assert [r.run_id for r in ledger.active()][:2] == ["20261201T000000Z-000000", "20261201T010000Z-000001"]
    finally:
        ledger.close()
    assert user_version(old_ledger / FILE) == 0


def test_a_ledger_from_a_newer_chute_is_refused_untouched(old_ledger: Path) -> None:
    db = sqlite3.connect(old_ledger / FILE)
    db.execute(f"PRAGMA user_version={VERSION + 1}")
    db.close()
    digest = hashlib.sha256((old_ledger / FILE).read_bytes()).hexdigest()
    for readonly in (False, True):
        with pytest.raises(ChuteError) as refused:
            Ledger(old_ledger, readonly=readonly)
        assert f"schema version {VERSION + 1}, newer than this chute's {VERSION}" in str(refused.value)
        assert "\n" not in str(refused.value)
    assert hashlib.sha256((old_ledger / FILE).read_bytes()).hexdigest() == digest


def test_chute_status_on_a_newer_ledger_is_one_line(old_ledger: Path, tmp_path: Path) -> None:
    db = sqlite3.connect(old_ledger / FILE)
    db.execute(f"PRAGMA user_version={VERSION + 1}")
    db.close()
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {old_ledger}\nmodules_path: []\njobs_path: []\n")
    proc = subprocess.run(
        [str(CHUTE), "status", "--config", str(config)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"chute: ledger {old_ledger / FILE} has schema version {VERSION + 1}")


def test_counts_follow_every_change_of_state(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    try:
        for i in range(4):
            ledger.queued(f"r{i}", "/in", "job", f"f{i}", "/c", f"2026-01-0{i + 1}T00:00:00.000Z")
        ledger.started("r0", "2026-01-05T00:00:00.000Z")
        ledger.started("r1", "2026-01-05T00:00:00.000Z")
        ledger.finished("r1", State.FAILED, "2026-01-06T00:00:00.000Z")
        ledger.set_state("r1", State.RETRIED)
        ledger.queued("r1", "/in", "job", "f1", "/c", "2026-01-07T00:00:00.000Z")  # the same run claimed again
        ledger.started("r2", "2026-01-05T00:00:00.000Z")
        ledger.finished("r2", State.SUCCEEDED, "2026-01-06T00:00:00.000Z")
        scanned = dict(ledger.db.execute("SELECT state, COUNT(*) FROM runs GROUP BY state").fetchall())
        assert ledger.counts() == scanned == {"queued": 2, "running": 1, "succeeded": 1}
    finally:
        ledger.close()


def test_prune_deletes_old_finished_runs_and_never_an_active_one(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    try:
        for i, state in enumerate([State.SUCCEEDED, State.FAILED, State.DISCARDED, State.SUCCEEDED]):
            ledger.queued(f"old{i}", "/in", "job", f"f{i}", "/c", "2025-01-01T00:00:00.000Z")
            ledger.started(f"old{i}", "2025-01-01T00:00:01.000Z")
            ledger.finished(f"old{i}", state, "2025-01-01T00:00:09.000Z" if i < 3 else "2026-06-01T00:00:00.000Z")
        ledger.queued("old-queued", "/in", "job", "q", "/c", "2025-01-01T00:00:00.000Z")
        ledger.queued("old-running", "/in", "job", "r", "/c", "2025-01-01T00:00:00.000Z")
        ledger.started("old-running", "2025-01-01T00:00:01.000Z")
        before = prune_before(90, datetime(2026, 6, 2, tzinfo=UTC))
        assert before == "2026-03-04T00:00:00.000Z"
        assert ledger.prune(before, batch=2) == 3
        assert ledger.prune(before) == 0
        kept = {r.run_id for r in ledger.active() + ledger.recent(100)}
        assert kept == {"old3", "old-queued", "old-running"}
        assert ledger.counts() == {"succeeded": 1, "queued": 1, "running": 1}
    finally:
        ledger.close()


def test_the_daemon_prunes_at_start_and_logs_it(tmp_path: Path) -> None:
    from tests.harness import Daemon, Setup, ledger_runs, state_dir_of

    setup = Setup(tmp_path, ledger={"keep_days": 30})
    setup.inbox()
    config = setup.write()
    ledger = Ledger(state_dir_of(config))
    try:
        for i, finished in enumerate(
            ["2020-01-01T00:00:00.000Z", "2020-01-02T00:00:00.000Z", "2999-01-01T00:00:00.000Z"]
        ):
            ledger.queued(f"r{i}", str(tmp_path / "in"), "twostep", f"f{i}", "/c", "2020-01-01T00:00:00.000Z")
            ledger.finished(f"r{i}", State.SUCCEEDED, finished)
        ledger.queued("stuck", str(tmp_path / "in"), "twostep", "s", "/gone", "2020-01-01T00:00:00.000Z")
        ledger.started("stuck", "2020-01-01T00:00:00.000Z")
    finally:
        ledger.close()
    with Daemon(config) as daemon:
        (pruned,) = daemon.wait_event("ledger.pruned")
        assert (pruned["rows"], pruned["keep_days"]) == (2, 30)
        assert daemon.stop() == 0
    assert {r.run_id for r in ledger_runs(config)} == {"r2", "stuck"}
