"""The daemon as the page sees it: its control socket's status, and the actions sent through it (contract §11)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import control_client, pauses, schedule
from ..config import Config
from ..errors import ChuteError
from ..leases import leases_dir

TIMEOUT = 2.0  # seconds for the daemon's answer: a page never hangs on a busy daemon
ACTION_TIMEOUT = 30.0  # a retry moves files back (a copy across filesystems takes a while)
FRESH_S = 1.0  # seconds one status answer of the daemon is used for
_lock = threading.Lock()  # one status request to the daemon at a time; the others wait for its answer
_last: dict[Path, tuple[float, dict[str, Any] | None]] = {}


def status(state_dir: Path) -> dict[str, Any] | None:
    """The daemon's status answer, or None when no daemon answers (then the ledger alone speaks).

    One answer serves every request for FRESH_S: fifty browsers polling the overview ask the daemon
    once a second between them, not fifty times every two seconds.
    """
    with _lock:
        at, answer = _last.get(state_dir, (float("-inf"), None))
        if time.monotonic() - at < FRESH_S:
            return answer
        try:
            answer = control_client.request(state_dir, {"op": "status"}, timeout=TIMEOUT)
        except ChuteError:
            answer = None
        _last[state_dir] = (time.monotonic(), answer)
        return answer


def act(state_dir: Path, message: dict[str, Any]) -> dict[str, Any]:
    """Send an action (pause, resume, retry) from the page; ChuteError with the daemon's one line."""
    try:
        return control_client.request(state_dir, message | {"by": "web"}, timeout=ACTION_TIMEOUT)
    finally:
        with _lock:
            _last.pop(state_dir, None)  # the next page shows what the action changed


def inboxes(config: Config, answer: dict[str, Any] | None, today: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Each configured inbox: its state, waiting, running, done today and failed today."""
    rows = {r["path"]: r for r in (answer or {}).get("inboxes", [])}
    paused = set(answer["paused"]) if answer else pauses.load(config.state_dir)
    zone, now = schedule.local_zone(), datetime.now(UTC)
    found = []
    for inbox in config.inboxes:
        path = str(inbox.path)
        row = rows.get(path, {})
        windows = inbox.windows()
        if answer is None:
            state = "daemon down"
        elif path in paused:
            state = "paused"
        elif not row.get("available", True):
            state = "unavailable"
        elif windows is not None and not schedule.is_open(windows, now, zone):
            state = "outside window"
        else:
            state = "watching"
        done = today.get(path, {})
        found.append(
            {
                "inbox": path,
                "job": inbox.job,
                "state": state,
                "paused": path in paused,
                "waiting": row.get("queued"),
                "running": row.get("running"),
                "done_today": done.get("succeeded", 0),
                "failed_today": done.get("failed", 0),
            }
        )
    return found


def workers(answer: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The executor's workers as the daemon reports them (pool workers with their heartbeat's age, or Dask's)."""
    found = (answer or {}).get("workers")
    return found if isinstance(found, list) else []


def progress(answer: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Each running run's live progress (step, entries, fractions, elapsed seconds) by run id."""
    found = (answer or {}).get("progress")
    return found if isinstance(found, dict) else {}


def daemons(config: Config) -> list[dict[str, Any]]:
    """Each daemon with a lease in an inbox: its host and pid, and its last heartbeat (the lease's rewrite)."""
    found: dict[str, dict[str, Any]] = {}
    for inbox in config.inboxes:
        try:
            leases = list(leases_dir(inbox.path).glob("*.json"))
        except OSError:  # an unavailable share
            continue
        for lease in leases:
            try:
                record, seen = json.loads(lease.read_text()), lease.stat().st_mtime
            except (OSError, ValueError):
                continue
            row = found.setdefault(str(record.get("daemon")), {"host": record.get("host"), "pid": record.get("pid")})
            row["heartbeat"] = max(row.get("heartbeat", 0.0), seen)
            row.setdefault("inboxes", []).append(str(inbox.path))
    now = time.time()
    for row in found.values():
        row["heartbeat_age_s"] = round(max(0.0, now - row["heartbeat"]), 1)
        row["heartbeat"] = datetime.fromtimestamp(row["heartbeat"], UTC).isoformat(timespec="seconds")
    return [{"daemon": d} | row for d, row in sorted(found.items())]
