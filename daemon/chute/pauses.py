"""The paused inboxes, kept in `<state_dir>/paused.json` so that a pause survives a restart (contract §11)."""

from __future__ import annotations

import json
from pathlib import Path

from . import logs
from .fileops import write_atomic

log = logs.get("chute.pauses")
FILE = "paused.json"


def load(state_dir: Path) -> set[str]:
    """The paused inboxes' paths; none when the file is missing (an unreadable one is logged, not fatal)."""
    path = state_dir / FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        paused = data["paused"]
        if not isinstance(paused, list) or not all(isinstance(p, str) for p in paused):
            raise ValueError("'paused' is not a list of paths")
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("control.failed", reason=f"cannot read {path}: {exc}; no inbox is paused")
        return set()
    return set(paused)


def save(state_dir: Path, paused: set[str]) -> None:
    """Replace the file in one rename, flushed first: a crash leaves the old set or the new one."""
    write_atomic(state_dir / FILE, (json.dumps({"paused": sorted(paused)}, indent=1) + "\n").encode())
