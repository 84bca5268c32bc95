"""What the daemon tells the outside world besides its log: notifications and metrics.

One place that turns the daemon's events (a run ended, a run deferred, a claim
taken over, an inbox gone) into Apprise messages (notify.py) and Prometheus
metrics (metrics.py). Neither may ever delay or fail a file: both are
fire-and-forget from the loop thread.
"""

from __future__ import annotations

from .config import Config
from .ledger import State
from .metrics import Metrics
from .notify import Notifications
from .queue import Active
from .run import LEDGER_STATE, RunResult, RunStatus


class Telemetry:
    def __init__(self, config: Config):
        self.config_key = (config.notify, config.metrics)
        self.notifications = Notifications(config.notify)
        self.metrics = Metrics(config.metrics)
        self.inboxes: set[str] = set()  # those with gauges

    def reconfigure(self, config: Config) -> None:
        """A reload: only what changed is replaced (a new notify list keeps the counters and hands each
        URL's queue to its new target, new metrics settings keep the notifications queued)."""
        notify, metrics = self.config_key
        if config.metrics != metrics:
            self.metrics.close()
            self.metrics, self.inboxes = Metrics(config.metrics), set()
            self.metrics.start()
        if config.notify != notify:
            old, self.notifications = self.notifications, Notifications(config.notify)
            self.notifications.take_over(old)
            self.notifications.start()
        self.config_key = (config.notify, config.metrics)

    def start(self) -> None:
        self.notifications.start()
        self.metrics.start()

    def close(self) -> None:
        self.metrics.close()
        self.notifications.close()

    def run_ended(self, active: Active, result: RunResult, waited_s: float) -> None:
        spec = active.spec
        # Counted (chute_runs_total{status}) as the ledger writes it: run.py holds the one mapping.
        self.metrics.run_finished(spec.job.name, LEDGER_STATE[result.status].value, waited_s)
        for e in result.entries:
            self.metrics.entry_finished(spec.job.name, e.module, e.status.value, e.duration_s, e.attempts)
        if result.status not in (RunStatus.SUCCEEDED, RunStatus.FAILED):
            return
        fields = dict(
            run_id=spec.run_id,
            job=spec.job.name,
            file=spec.input_name,
            result=None if result.result_dir is None else str(result.result_dir),
            duration_s=round(waited_s, 3),
        )
        if result.status == RunStatus.FAILED:
            error = result.error or {}
            fields.update(reason=error.get("reason"), step=error.get("step"), module=error.get("module"))
        event = "run.published" if result.status == RunStatus.SUCCEEDED else "run.quarantined"
        self.notifications.send(event, inbox=str(spec.inbox), **fields)

    def run_closed(self, active: Active, state: State) -> None:
        """A run that ended without a result value: released by a stop, or discarded."""
        self.metrics.run_finished(active.spec.job.name, state.value, None)

    def deferred(self, active: Active, kind: str) -> None:
        self.metrics.deferred(str(active.inbox.path), kind)

    def taken_over(self, inbox: str) -> None:
        self.metrics.take_over(inbox)

    def inbox_unavailable(self, inbox: str, reason: str | None) -> None:
        self.notifications.send("inbox.unavailable", inbox=inbox, reason=reason)

    def daemon_error(self, reason: str) -> None:
        self.notifications.send("daemon.error", inbox=None, reason=reason)

    def tick(
        self,
        now: float,
        queued: int,
        running: int,
        oldest_s: float | None,
        inboxes: dict[str, tuple[bool, float | None]],
        paused: frozenset[str] = frozenset(),
        outside: frozenset[str] = frozenset(),
    ) -> None:
        """Every loop iteration: the gauges, and the textfile when it is due."""
        self.metrics.queue(queued, running, oldest_s)
        for path, (available, scanned_at) in inboxes.items():
            self.metrics.inbox(path, available, scanned_at, path in paused, path not in outside)
        for path in self.inboxes - inboxes.keys():
            self.metrics.forget_inbox(path)
        self.inboxes = set(inboxes)
        self.metrics.flush(now)
