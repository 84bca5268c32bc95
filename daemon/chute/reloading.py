"""What a reload (SIGHUP) changes: the inboxes to stop and start watching, and the keys it cannot apply."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import Config, Inbox

# Settings the running executor, leases and recovery keep from the start: a new value needs a restart.
NEEDS_RESTART = ("state_dir", "work_dir", "workers", "executor", "work_reserve_mb", "lease_timeout")


@dataclass(frozen=True)
class Change:
    """The difference between the config in force and a new one."""

    stop: list[Path]  # inboxes removed or changed: no longer watched as they were
    start: list[Inbox]  # inboxes added or changed: watched as the new config says
    added: list[Path]
    removed: list[Path]
    needs_restart: list[str]


def compare(old: Config, new: Config) -> Change:
    """What applying `new` over `old` does; an inbox whose settings changed is stopped, then started again."""
    before = {i.path: i for i in old.inboxes}
    after = {i.path: i for i in new.inboxes}
    changed = [p for p, inbox in after.items() if p in before and inbox != before[p]]
    return Change(
        stop=[p for p in before if p not in after] + changed,
        start=[inbox for p, inbox in after.items() if p not in before or p in changed],
        added=[p for p in after if p not in before],
        removed=[p for p in before if p not in after],
        needs_restart=[k for k in NEEDS_RESTART if getattr(new, k) != getattr(old, k)],
    )
