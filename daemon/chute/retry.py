"""`chute retry`: quarantined inputs back into their inbox, each once (docs/contract.md §5, §7)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import logs
from .fileops import place
from .ledger import Ledger, Run, State
from .names import shown
from .run import utcnow

log = logs.get("chute.retry")


def retry(ledger: Ledger, run_ids: list[str]) -> int:
    """Move the named runs' inputs (or every failed run's, with no names) back; returns how many could not go."""
    runs: list[Run | None] = [ledger.get(r) for r in run_ids] if run_ids else list(ledger.failed())
    ids = run_ids or [r.run_id for r in runs if r is not None]
    failed = 0
    for run_id, run in zip(ids, runs):
        problem = _refused(ledger, run_id, run, named=bool(run_ids))
        if problem is not None:
            failed += problem != ""
            if problem:
                print(problem, file=sys.stderr)
            continue
        assert run is not None
        ok, line = _put_back(ledger, run)
        failed += not ok
        print(line, file=sys.stdout if ok else sys.stderr)
    return failed


def answers(ledger: Ledger, run_ids: list[str]) -> list[dict[str, Any]]:
    """`chute retry RUN_ID...` inside the daemon (its control socket's `retry`): each run's outcome and line."""
    found = []
    for run_id in run_ids:
        run = ledger.get(run_id)
        problem = _refused(ledger, run_id, run, named=True)
        ok, line = (False, problem or "") if problem is not None or run is None else _put_back(ledger, run)
        if ok and run is not None:
            log.info("run.retried", run_id=run_id, job=run.job, inbox=run.inbox, file=run.input_name)
        found.append({"run_id": run_id, "ok": ok, "message": line})
    return found


def retrier(state_dir: Path) -> Callable[[Any], dict[str, Any]]:
    """The control socket's `retry` op for the daemon on `state_dir` (what chute web's retry buttons send)."""
    return functools.partial(in_daemon, state_dir)


def in_daemon(state_dir: Path, run_ids: Any) -> dict[str, Any]:
    """`{"op": "retry", "runs": [RUN_ID, ...]}` answered, on a ledger connection of its own (the control thread's)."""
    if not isinstance(run_ids, list) or not all(isinstance(r, str) for r in run_ids):
        return {"ok": False, "error": "'runs' must be a list of run ids"}
    ledger = Ledger(state_dir)
    try:
        return {"ok": True, "results": answers(ledger, run_ids)}
    finally:
        ledger.close()


def _put_back(ledger: Ledger, run: Run) -> tuple[bool, str]:
    """Move a quarantined run's input back into its inbox: (done, the line that says what happened)."""
    assert run.result is not None
    source = Path(run.result) / run.input_name
    try:
        back = place(source, Path(run.inbox), run.input_name, move=True)
    except OSError as exc:  # the inbox is gone (an unmounted share), or not writable
        why = shown(exc.strerror or exc)
        return False, f"{run.run_id}: cannot move {shown(source)} back to {shown(run.inbox)}: {why}"
    ledger.retried(run.run_id, back.name, utcnow())
    return True, f"{run.run_id}: {shown(back)}"


def _refused(ledger: Ledger, run_id: str, run: Run | None, named: bool) -> str | None:
    """Why `run` cannot go back (a line), "" to pass over it quietly, or None when it can."""
    if run is not None and run.state == State.RETRIED:
        return f"{shown(run_id)}: already retried {_retried_as(ledger, run)}"
    if run is None or run.state != State.FAILED or not run.result:
        return f"{shown(run_id)}: not a quarantined run"
    source = Path(run.result) / run.input_name
    if not source.is_file() or source.is_symlink():
        # --all passes over what was taken out of the quarantine by hand.
        return f"{run_id}: {shown(source)} is no longer in the quarantine" if named else ""
    return None


def _retried_as(ledger: Ledger, run: Run) -> str:
    """`as <run id>` of the run that took the retried input, or when it went back if none has yet."""
    retry = (run.error or {}).get("retried") or {}
    again = ledger.retry_of(run, retry["name"], retry["at"]) if retry else None
    if again is not None:
        return f"as {again}"
    return f"at {retry['at']} (not claimed again yet)" if retry else "(by an older chute)"
