"""The ledger's old finished runs pruned (ledger.keep_days): at the first look, then about hourly."""

from __future__ import annotations

from datetime import UTC, datetime

from . import logs
from .ledger import Ledger, prune_before

log = logs.get("chute.ledger")
# Seconds between prunes of the ledger's old finished runs: at start, then about hourly.
PRUNE_INTERVAL = 3600.0


class Pruner:
    """When the ledger is next pruned, and the pruning itself (the service's loop thread alone calls it)."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.next_prune = 0.0  # the first look prunes

    def tick(self, now: float, keep_days: int | None) -> None:
        """Prune if it is due and the config keeps finished runs for `keep_days` only."""
        if now >= self.next_prune and keep_days is not None:
            self.next_prune = now + PRUNE_INTERVAL
            rows = self.ledger.prune(prune_before(keep_days, datetime.now(UTC)))
            if rows:
                log.info("ledger.pruned", rows=rows, keep_days=keep_days)
