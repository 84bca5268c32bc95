"""`chute status`: what the ledger, the paused set and the schedules say, as text or JSON (docs/contract.md §11).

With a daemon answering on the control socket, each running run also shows its live progress.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from . import control_client, pauses, schedule
from .config import Config
from .errors import ChuteError
from .ledger import Ledger, Run
from .names import fields, shown, strict

LIVE_TIMEOUT = 2.0  # seconds for the daemon's answer: a daemon busy longer leaves the live progress out


def show(config: Config, limit: int, as_json: bool) -> None:
    """Print the status of the daemon that runs `config`, from its ledger (read-only)."""
    ledger = Ledger(config.state_dir, readonly=True)
    try:
        active, recent, counts = ledger.active(), ledger.recent(limit), ledger.counts()
    finally:
        ledger.close()
    paused = sorted(pauses.load(config.state_dir) & {str(i.path) for i in config.inboxes})
    schedules, live = _schedules(config), _live(config)
    if as_json:
        document = {
            "counts": counts,
            "paused": [strict(p) for p in paused],
            "schedules": [strict(s) for s in schedules],
            "active": [_run_json(r) | _progress_json(live, r) for r in active],
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
            if r.run_id in live and title != "recent":
                print(_progress_line(live[r.run_id]))


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


def _live(config: Config) -> dict[str, dict[str, Any]]:
    """The running runs' live progress from the daemon's control socket; none when no daemon answers."""
    try:
        answer = control_client.request(config.state_dir, {"op": "status"}, timeout=LIVE_TIMEOUT)
    except ChuteError:  # no daemon, or one stopping: the ledger alone says what runs
        return {}
    progress = answer.get("progress")
    return progress if isinstance(progress, dict) else {}


def _progress_json(live: dict[str, dict[str, Any]], run: Run) -> dict[str, Any]:
    """`"progress"` for a running run a daemon reports on (its message, names in strict UTF-8)."""
    return {"progress": strict(live[run.run_id])} if run.run_id in live else {}


def _progress_line(p: dict[str, Any]) -> str:
    """`    step 2/3 thumbnails: proxy 42%, waveform done  (1m12s)`: a running run's step and entries."""
    elapsed = f"({_duration(p.get('elapsed_s') or 0)})"
    if not p.get("step"):
        return f"    {elapsed}"
    rows = p.get("entries") or []
    modules = [e["module"] for e in rows]
    # By module (the step is named already); by label where a step runs one module twice.
    names = [e["module"] if modules.count(e["module"]) == 1 else e["label"] for e in rows]
    entries = ", ".join(f"{shown(name)} {_entry_state(e)}" for name, e in zip(names, rows, strict=True))
    return f"    step {p['index']}/{p['steps']} {shown(p['step'])}: {entries}  {elapsed}"


def _entry_state(e: dict[str, Any]) -> str:
    """An entry as `status` shows it: 42%, running (no fraction yet), done, failed or waiting; a for_each
    entry's across its files, and how many of them are done (`37% (3/8 files)`)."""
    if e["state"] == "running":
        shown = "running" if e["fraction"] is None else f"{int(e['fraction'] * 100)}%"
    else:
        shown = {"succeeded": "done", "failed": "failed"}.get(e["state"], "waiting")
    return f"{shown} ({e['files_done']}/{e['files']} files)" if e.get("files") else shown


def _duration(seconds: float) -> str:
    """1h02m, 1m12s or 5s."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
