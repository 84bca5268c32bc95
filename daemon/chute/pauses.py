"""The paused inboxes, kept in `<state_dir>/paused.json` so that a pause survives a restart (contract §11)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import logs

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
    path = state_dir / FILE
    tmp = path.with_name(f".{FILE}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"paused": sorted(paused)}, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
