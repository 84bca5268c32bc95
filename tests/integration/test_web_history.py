"""The history's name search over a real ledger: what the page finds, however old (ledger v5's trigram index)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chute.ledger import FILE, Ledger, prune_before
from chute.web import history
from chute.web.history import Filter

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ledger-v1.sqlite"
START = datetime(2026, 1, 1, tzinfo=UTC)
ROW = (
    "INSERT INTO runs (run_id, inbox, job, input_name, state, attempts, claim, queued_at, finished_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?7)"
)


def stamp(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fill(state: Path, names: list[str | bytes], job: str = "ingest") -> None:
    """One finished run per name, oldest first, a second apart, in one transaction (as a long history)."""
    ledger = Ledger(state)
    try:
        rows = [
            (f"run-{i:06d}", "/in", job, name, "succeeded", f"/c/{i}", stamp(START + timedelta(seconds=i)))
            for i, name in enumerate(names)
        ]
        ledger.db.execute("BEGIN")
        ledger.db.executemany(ROW, rows)
        ledger.db.execute("COMMIT")
    finally:
        ledger.close()


def found(state: Path, q: str, **kw) -> list[str]:
    page = history.runs(state, Filter(q=q), limit=kw.pop("limit", 50), **kw)
    assert page.complete
    return [run.input_name for run in page.runs]


def test_a_name_only_an_old_run_has_is_found_behind_the_newest_runs(tmp_path: Path) -> None:
    names: list[str | bytes] = ["Interview_final.mov", *(f"clip-{i:06d}.mov" for i in range(history.WINDOW + 500))]
    fill(tmp_path, names)
    # Not among the newest WINDOW runs a search reads first: the index finds it, and says the page is whole.
    assert found(tmp_path, "interview") == ["Interview_final.mov"]
    assert history.count(tmp_path, Filter(q="INTERVIEW")) == 1
    # A part every name has fills the page from the newest runs.
    assert found(tmp_path, "clip-", limit=3) == [f"clip-{i:06d}.mov" for i in range(history.WINDOW + 499, -1, -1)][:3]
    # Paging past the newest runs goes on in the same order.
    older = found(tmp_path, "clip-00001", limit=5, offset=5)
    assert older == [f"clip-{i:06d}.mov" for i in (14, 13, 12, 11, 10)]
    assert found(tmp_path, "no such name") == []


@pytest.mark.parametrize(
    "q",
    ["clip", "CLIP", 'say "hi"', "o'clock", "50%", "a_b", "caf", "été", "ab", "x"],
)
def test_the_index_finds_exactly_what_reading_every_name_finds(tmp_path: Path, q: str) -> None:
    names: list[str | bytes] = [
        "clip.mov",
        "CLIP_2.MXF",
        'say "hi" take 1.wav',
        "five o'clock.mov",
        "50% scale.mov",
        "a_b.mov",
        "aXb.mov",
        "été.mp4",
        "caf\xe9.mp4".encode("latin-1"),  # not UTF-8: stored as its bytes (ledger._text)
        "zzz.mov",
    ]
    fill(tmp_path, names)
    with history.opened(tmp_path) as ledger:
        by_index = history._select(ledger.db, Filter(q=q).where(indexed=len(q) >= 3), 50, 0, 5.0)
        by_reading = history._select(ledger.db, Filter(q=q).where(), 50, 0, 5.0)
    assert by_index.runs == by_reading.runs and by_index.complete and by_reading.complete
    assert found(tmp_path, q) == [run.input_name for run in by_reading.runs]


def test_pruned_runs_leave_the_index_and_a_migrated_ledger_is_indexed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    shutil.copyfile(FIXTURE, state / FILE)  # written before the ledger had versions
    fill(state, [f"late-{i}.mov" for i in range(3)])  # opening it migrated it: rows before and after are indexed
    with history.opened(state) as ledger:
        assert history._indexed(ledger.db, Filter(q="caf"))
        old = history._select(ledger.db, Filter(q="caf").where(indexed=True), 50, 0, 5.0).runs
        late = history._select(ledger.db, Filter(q="late-").where(indexed=True), 50, 0, 5.0).runs
    assert [run.input_name for run in old] == ["caf\udce9.mp4"]
    assert len(late) == 3
    ledger = Ledger(state)
    try:
        ledger.prune(prune_before(0, START + timedelta(days=3650)))  # every finished run
    finally:
        ledger.close()
    with history.opened(state) as ledger:
        left = history._select(ledger.db, Filter(q="late-").where(indexed=True), 50, 0, 5.0).runs
    assert left == []
