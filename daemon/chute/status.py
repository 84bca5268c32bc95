"""`chute status`: what the ledger, the paused set and the schedules say, as text or JSON (docs/contract.md §11)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from . import pauses, schedule
from .config import Config
from .ledger import Ledger, Run
from .names import fields, shown, strict


def show(config: Config, limit: int, as_json: bool) -> None:
    """Print the status of the daemon that runs `config`, from its ledger (read-only)."""
    ledger = Ledger(config.state_dir, readonly=True)
    try:
        active, recent, counts = ledger.active(), ledger.recent(limit), ledger.counts()
    finally:
        ledger.close()
    paused = sorted(pauses.load(config.state_dir) & {str(i.path) for i in config.inboxes})
    schedules = _schedules(config)
    if as_json:
        document = {
            "counts": counts,
            "paused": [strict(p) for p in paused],
            "schedules": [strict(s) for s in schedules],
            "active": [_run_json(r) for r in active],
            "recent": [_run_json(r) for r in recent],
        }
        print(json.dumps(document, indent=2))
        return
    print("  ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no runs yet")
    for path in paused:
        print(f"paused: {shown(path)}  (chute resume to claim again)")
    for row in schedules:
        print(f"{'inside' if row['in_schedule'] else 'outside'} its schedule{_until(row)}: {shown(row['inbox'])}")
    for title, rows in (("queued and running", active), ("recent", recent)):
        print(f"{title}:")
        for r in rows:
            print(_row(r))


def _row(r: Run) -> str:
    """One run as a line: id, state, job, name, when, and where it runs or why it ended."""
    when = r.finished_at or r.started_at or r.queued_at
    where = f"on {r.worker}  " if r.worker and r.state.value == "running" else ""
    name, extra = shown(r.input_name), shown(where + _why(r))
    return f"  {r.run_id}  {r.state.value:<9} {r.job:<14} {name}  {when}  {extra}"


def _run_json(run: Run) -> dict[str, Any]:
    """A ledger row for `status --json`: strict UTF-8, with `<key>_b64` for a name or path that is not UTF-8."""
    row = run.as_dict()
    for key in ("inbox", "input_name", "claim", "result"):
        if row[key] is not None:
            row.update(fields(key, row[key]))
    return strict(row)


def _why(run: Run) -> str:
    """What `status` says after a run: a failure's reason on one line, else where its result went."""
    reason = (run.error or {}).get("reason") or ""
    if run.state.value in ("failed", "retried") and reason:
        return " ".join(reason.split())
    return run.result or reason


def _schedules(config: Config) -> list[dict[str, Any]]:
    """Each scheduled inbox: whether it is inside its windows now, and when they next close or open (local time)."""
    zone, now, rows = schedule.local_zone(), datetime.now(UTC), []
    for inbox in config.inboxes:
        windows = inbox.windows()
        if windows is None:
            continue
        inside, change = schedule.is_open(windows, now, zone), schedule.next_change(windows, now, zone)
        at = None if change is None else change.astimezone(zone)
        rows.append(
            {
                "inbox": str(inbox.path),
                "in_schedule": inside,
                "closes": at.isoformat(timespec="minutes") if at and inside else None,
                "opens": at.isoformat(timespec="minutes") if at and not inside else None,
            }
        )
    return rows


def _until(row: dict[str, Any]) -> str:
    """ " until Mon 20:00" (the next opening or closing, as a wall-clock day and time), or nothing."""
    at = row["closes"] or row["opens"]
    return "" if at is None else f" until {datetime.fromisoformat(at).strftime('%a %H:%M')}"
