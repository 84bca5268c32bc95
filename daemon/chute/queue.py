"""The runs a daemon holds: waiting (ready, or deferred until a time), and running; with their ledger rows."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from . import claims, logs
from .config import Inbox
from .ledger import Ledger, State
from .run import LEDGER_STATE, Fault, RunResult, RunSpec, failure, utcnow

log = logs.get("chute.queue")

# A deferred run waits DEFER_MIN seconds, then twice as long each time, up to DEFER_MAX:
# an outage of minutes is retried within a minute of its end, and a long one costs little.
DEFER_MIN, DEFER_MAX = 2.0, 60.0


@dataclass
class Active:
    """A run this daemon holds: claimed, then running, then done."""

    spec: RunSpec
    inbox: Inbox
    queued_at: float  # monotonic
    future: Future | None = None
    not_before: float = 0.0
    deferrals: int = 0
    crashes: int = 0  # worker deaths under it while this daemon held it
    kept: bool = False  # its result is kept in work_dir: its next attempt only delivers (keep.py)

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def claim(self) -> Path:
        """Its claim folder: a daemon's run always has one (only `chute submit`'s has none)."""
        assert self.spec.claim is not None
        return self.spec.claim


class RunQueue:
    def __init__(self, ledger: Ledger, clock, telemetry=None):
        self.ledger, self.clock, self.telemetry = ledger, clock, telemetry
        self.pending: deque[Active] = deque()
        self.running: dict[str, Active] = {}

    def add(self, active: Active, *, front: bool = False) -> None:
        """A claimed (or adopted) run, written to the ledger as queued."""
        spec = active.spec
        self.ledger.queued(
            spec.run_id, str(active.inbox.path), spec.job.name, spec.input_name, str(spec.claim), utcnow()
        )
        (self.pending.appendleft if front else self.pending.append)(active)

    def ready(self, now: float, kept_only: bool = False) -> Active | None:
        """The first waiting run whose time has come (with `kept_only`, of those with a kept result), taken out."""
        for active in self.pending:
            if active.not_before <= now and (active.kept or not kept_only):
                self.pending.remove(active)
                return active
        return None

    def started(self, active: Active, future: Future, worker: str | None) -> None:
        active.future = future
        self.running[active.run_id] = active
        self.ledger.started(active.run_id, utcnow(), worker)

    def finished(self, active: Active, result: RunResult) -> None:
        self.running.pop(active.run_id, None)
        self.ledger.finished(
            active.run_id,
            LEDGER_STATE[result.status],
            utcnow(),
            None if result.result_dir is None else str(result.result_dir),
            result.error,
            result.input_size,
            result.input_sha256,
            result.worker,
            result.figures(),
        )
        if self.telemetry is not None:
            self.telemetry.run_ended(active, result, self.clock() - active.queued_at)

    def ended(self, active: Active, state: State, result: Path | None = None, error: dict | None = None) -> None:
        """A run that ends without a result value (released by the daemon itself, discarded)."""
        self.running.pop(active.run_id, None)
        self.ledger.finished(active.run_id, state, utcnow(), None if result is None else str(result), error)
        if self.telemetry is not None:
            self.telemetry.run_closed(active, state)

    def defer(self, active: Active, now: float, reason: str, fault: Fault | None) -> None:
        """Back to waiting with its claim kept: after a back-off, or at once for a crash (its worker died)."""
        self.running.pop(active.run_id, None)
        active.future = None
        active.deferrals += 1
        delay = 0.0 if fault == Fault.CRASH else min(DEFER_MAX, DEFER_MIN * 2 ** (active.deferrals - 1))
        active.not_before = now + delay
        self.ledger.requeued(active.run_id, failure(f"waiting ({fault.value if fault else 'deferred'}): {reason}"))
        self.pending.append(active)
        log.warning(
            "run.deferred", **active.spec.context(), reason=reason, fault=fault and fault.value, retry_in_s=delay
        )
        if self.telemetry is not None:
            self.telemetry.deferred(active, fault.value if fault else "unknown")

    def release(self, active: Active) -> None:
        """Put a run's input back into its inbox (a stop); the run ends as released."""
        spec = active.spec
        if claims.taken(active.claim):  # another daemon took it over (we were frozen): not ours to put back
            self.ended(active, State.DISCARDED, error=failure("another daemon took over this claim"))
            return
        try:
            back = claims.release(active.claim, active.inbox.path)
        except OSError as exc:
            self.running.pop(active.run_id, None)
            log.error("run.release_failed", **spec.context(), reason=exc.strerror or str(exc))
            return
        self.ended(active, State.RELEASED, back)
        log.info("run.released", **spec.context(), to=None if back is None else str(back))

    def retry_now(self, inbox: Path) -> None:
        """An inbox (or its share) is back: its deferred runs go at once, not after their back-off."""
        for active in self.pending:
            if active.inbox.path == inbox:
                active.not_before, active.deferrals = 0.0, 0

    def waiting(self, now: float) -> int:
        """Runs ready to start; a deferred one waits without holding a place."""
        return sum(1 for a in self.pending if a.not_before <= now)

    def next_due(self, now: float) -> float | None:
        later = [a.not_before for a in self.pending if a.not_before > now]
        return min(later) if later else None

    def inboxes(self) -> set[Path]:
        return {a.inbox.path for a in [*self.running.values(), *self.pending]}

    def oldest(self, now: float) -> float | None:
        """Seconds the longest-waiting run has waited."""
        return max((now - a.queued_at for a in self.pending), default=None)
