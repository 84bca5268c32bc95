"""A run's live progress, on the run side: its step and entries, sent to the daemon at most twice a second.

A `Reporter` is the step engine's `emit` (pipeline.Emit) on a pool or Dask worker: it keeps the state of
the current step's entries and hands a plain dict to `send` (the worker's connection, or a Dask event).
The daemon keeps the last one per running run for `chute status` (docs/contract.md §11).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .run import RunSpec

EVERY = 0.5  # seconds between two messages of one run, at least (a module may print progress per frame)
# What an entry event makes of the entry's state; entry.progress keeps it.
STATES = {"entry.started": "running", "entry.finished": "succeeded", "entry.failed": "failed"}

Message = dict[str, Any]


def topic(events: str) -> str:
    """The Dask event topic of the progress of a daemon's runs, next to its topic of run events."""
    return f"{events}.progress"


def delay(last: float | None, now: float, force: bool, every: float = EVERY) -> float:
    """How long to hold a message: 0 to send it now; a forced one (a step's end) is never held."""
    if force or last is None:
        return 0.0
    return max(0.0, last + every - now)


class Reporter:
    """The step engine's emit: tracks one run's step and entries, and sends them throttled."""

    def __init__(self, spec: RunSpec, send: Callable[[Message], None], clock: Callable[[], float] = time.monotonic):
        self.run_id, self.send, self.clock = spec.run_id, send, clock
        self.steps = [(s.name, [(e.label, e.module) for e in s.entries]) for s in spec.job.steps]
        self.where = {label: i for i, (_, entries) in enumerate(self.steps) for label, _ in entries}
        self.step = -1
        self.entries: dict[str, dict[str, Any]] = {}
        self.members: dict[str, dict[str, dict[str, Any]]] = {}  # a for_each entry's instances, by file
        self.lock = threading.Lock()
        self.last: float | None = None
        self.timer: threading.Timer | None = None

    def __call__(self, event: str, label: str = "", **fields: Any) -> None:
        """Take one step-engine event (pipeline.Emit); send now, or later when the throttle allows."""
        if label not in self.where:
            return
        with self.lock:
            self._take(event, label, fields)
            ended = all(e["state"] in ("succeeded", "failed") for e in self.entries.values())
            wait = delay(self.last, self.clock(), force=ended)
            if wait == 0.0:
                self._send()
            elif self.timer is None:
                self.timer = threading.Timer(wait, self._flush)
                self.timer.daemon = True
                self.timer.start()

    def _take(self, event: str, label: str, fields: dict[str, Any]) -> None:
        step = self.where[label]
        if step != self.step:
            self.step = step
            self.entries = {
                lab: {"label": lab, "module": mod, "state": "pending", "fraction": None}
                for lab, mod in self.steps[step][1]
            }
            self.members = {}
        row = self.entries[label]
        if "member" in fields:  # an instance of a for_each entry: one of `members` files
            member = self.members.setdefault(label, {}).setdefault(fields["member"], {"state": "pending"})
            _apply(member, event, fields)
            row.update(_together(self.members[label], int(fields["members"])))
        else:
            _apply(row, event, fields)

    def message(self) -> Message:
        """The run's progress now: its step (name, 1-based index, count) and each entry of it."""
        return {
            "run_id": self.run_id,
            "step": self.steps[self.step][0],
            "index": self.step + 1,
            "steps": len(self.steps),
            "entries": [dict(e) for e in self.entries.values()],
        }

    def _send(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.last = self.clock()
        try:
            self.send(self.message())
        except Exception:  # the daemon or the scheduler is gone: the run goes on, its end is what matters
            pass

    def _flush(self) -> None:
        with self.lock:
            self.timer = None
            self._send()

    def close(self) -> None:
        """Stop a held message from being sent after the run."""
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None


def _apply(row: dict[str, Any], event: str, fields: dict[str, Any]) -> None:
    """One step-engine event on an entry's row (or a for_each instance's): its state and fraction."""
    if event in STATES:
        row["state"] = STATES[event]
    if event == "entry.finished":
        row["fraction"] = 1.0
    elif event == "entry.started":
        row["fraction"] = None
    elif event == "entry.progress":
        row["fraction"] = max(0.0, min(1.0, float(fields["progress"])))


def _together(instances: dict[str, dict[str, Any]], files: int) -> dict[str, Any]:
    """A for_each entry as one row: running while any file runs, its fraction across all `files`.

    A file not started yet counts 0, a finished one 1, a running one its own fraction (0 until it says).
    """
    states = [i["state"] for i in instances.values()]
    done = states.count("succeeded")
    if "running" in states or len(instances) < files:
        state = "running" if "running" in states or done else "pending"
    else:
        state = "failed" if "failed" in states else "succeeded"
    known = sum(1.0 if i["state"] == "succeeded" else i.get("fraction") or 0.0 for i in instances.values())
    return {"state": state, "fraction": round(known / files, 3), "files": files, "files_done": done}
