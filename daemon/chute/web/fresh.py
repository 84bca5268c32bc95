"""A value worked out at most once per interval and shared by every request that asks meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any


class Fresh:
    """Values by key, each reused for `max_age` seconds; one request works a stale one out while the rest wait.

    Fifty open overviews each ask for the live fragment every 2 s: without this, each asks the daemon's
    control socket and the ledger itself, and the CPU they take is taken from the daemon's drain.
    """

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic):
        self.max_age, self.clock = max_age, clock
        self.lock = threading.Lock()
        self.values: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable, work: Callable[[], Any]) -> Any:
        """The value of `key`, worked out by `work()` when it is missing or older than `max_age`."""
        with self.lock:  # held while working: the requests that wait then reuse what it found
            found = self.values.get(key)
            now = self.clock()
            if found is None or now - found[0] > self.max_age:
                found = (now, work())
                self.values[key] = found
            return found[1]

    def forget(self, key: Hashable) -> None:
        """The next `get` of `key` works it out afresh."""
        with self.lock:
            self.values.pop(key, None)
