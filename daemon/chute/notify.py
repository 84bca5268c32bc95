"""Notifications through Apprise (contract §10), sent from background threads that never delay a file.

The service calls `Notifications.send` from its loop; each target has its own
bounded queue and thread, so a slow or dead endpoint delays only its own
messages, never a claim, a run or another target. A message that cannot be
sent is retried with back-off, then given up; nothing about a file depends on
it. A stop gives each queue a time budget, and keeps the back-off: what cannot
go out within it is dropped at once, with one event. A reload hands each URL's
queue to the target of the same URL in the new config. URLs are logged only
with their secrets masked (Apprise's privacy form).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import logs
from .apprise_urls import CAPTURE, instantiate, mask, masked_url
from .config import NotifyTarget
from .names import shown

log = logs.get("chute.notify")

QUEUE_SIZE = 1000  # messages waiting per target; more are dropped (and logged)
RETRY_DELAYS = (5.0, 30.0, 120.0)  # seconds before the 2nd, 3rd and 4th attempt, then it is given up

_TITLES = {
    "run.published": "published {file}",
    "run.quarantined": "quarantined {file}",
    "inbox.unavailable": "inbox unavailable: {inbox}",
    "daemon.error": "daemon error",
}
_TYPES = {
    "run.published": "success",
    "run.quarantined": "failure",
    "inbox.unavailable": "warning",
    "daemon.error": "failure",
}
# The body's lines, in this order; fields the service passes beyond these follow them.
_ORDER = ("file", "job", "inbox", "result", "duration", "reason", "step", "module", "run_id")


@dataclass(frozen=True)
class Message:
    """One notification, as the service sent it."""

    event: str
    inbox: str | None
    fields: dict[str, Any]
    host: str = field(default_factory=socket.gethostname)

    def title(self) -> str:
        values = {"file": shown(self.fields.get("file", "?")), "inbox": shown(self.inbox or "?")}
        return f"chute on {self.host}: {_TITLES.get(self.event, self.event).format(**values)}"

    def body(self) -> str:
        """`key: value` lines: what a person reads, and what a webhook receiver can split."""
        fields = dict(self.fields, inbox=self.inbox)
        if fields.get("duration_s") is not None:
            fields["duration"] = f"{float(fields.pop('duration_s')):.1f} s"
        fields.pop("duration_s", None)
        keys = [k for k in _ORDER if k in fields] + sorted(k for k in fields if k not in _ORDER)
        # shown(): a newline in a file name would otherwise forge a line (a `reason:`) of the message.
        lines = [f"{key}: {shown(fields[key])}" for key in keys if fields[key] is not None]
        return "\n".join([f"event: {self.event}", *lines, f"host: {self.host}"])


class Notifications:
    """Every configured target, each with its own queue and thread."""

    def __init__(self, targets: Sequence[NotifyTarget]):
        self._targets = [_Target(t, n) for n, t in enumerate(targets)]

    def start(self) -> None:
        for target in self._targets:
            target.start()

    def send(self, event: str, *, inbox: str | None, **fields: Any) -> None:
        """Queue `event` for every target that wants it; never blocks, never raises."""
        if not self._targets:
            return
        try:
            message = Message(event, inbox, fields)
            for target in self._targets:
                if target.wants(event, inbox):
                    target.put(message)
        except Exception as exc:  # a bug here must not reach the daemon's loop
            log.warning("notify.dropped", notification=event, reason=f"{type(exc).__name__}: {exc}")

    def take_over(self, old: Notifications) -> None:
        """A reload: what `old` queued for a URL still configured is sent from here, in order, back-off kept;
        old targets whose URL is gone get the usual stop budget, in the background."""
        left = list(old._targets)
        for target in self._targets:
            same = next((t for t in left if t.url == target.url), None)
            if same is not None:
                left.remove(same)
                same.hand_over(target)
        old.close(wait=False)

    def close(self, timeout: float = 5.0, *, wait: bool = True) -> None:
        """Stop the threads; what is still queued gets up to `timeout` seconds in all (sent in the
        background when not `wait`: a reload never waits on an endpoint)."""
        deadline = time.monotonic() + timeout
        for target in self._targets:
            target.stop(deadline)
        if wait:
            for target in self._targets:
                target.join(deadline)


@dataclass
class _Pending:
    """A message in a target's queue: the attempts made, and when the next one is due (its back-off)."""

    message: Message
    attempts: int = 0
    due: float = 0.0  # monotonic


class _Target:
    """One Apprise URL: its filter, its queue and the thread that empties it."""

    def __init__(self, target: NotifyTarget, number: int):
        self.url = target.url
        self._plugin = instantiate(target.url)
        self.masked = masked_url(target.url, self._plugin)
        self.events = frozenset(target.events)
        self.inboxes = None if target.inboxes is None else frozenset(os.path.realpath(p) for p in target.inboxes)
        self._resolved: dict[str, str] = {}
        self._queue: deque[_Pending] = deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._deadline = float("inf")
        self._successor: _Target | None = None  # the same URL after a reload: its queue went there
        self._thread = threading.Thread(target=self._loop, name=f"chute-notify-{number}", daemon=True)

    def wants(self, event: str, inbox: str | None) -> bool:
        if event not in self.events:
            return False
        if self.inboxes is None or inbox is None:  # daemon.error belongs to no inbox: every target hears it
            return True
        if inbox not in self._resolved:  # once per inbox, so a symlinked path still matches
            self._resolved[inbox] = os.path.realpath(inbox)
        return self._resolved[inbox] in self.inboxes

    def put(self, message: Message) -> None:
        with self._ready:
            if len(self._queue) >= QUEUE_SIZE or self._stopping:
                reason = "stopping" if self._stopping else f"{QUEUE_SIZE} messages already waiting"
                log.warning(
                    "notify.dropped", url=self.masked, notification=message.event, reason=reason, **_run_fields(message)
                )
                return
            self._queue.append(_Pending(message))
            self._ready.notify()

    def start(self) -> None:
        self._thread.start()

    def stop(self, deadline: float) -> None:
        with self._ready:
            self._stopping, self._deadline = True, deadline
            self._ready.notify()

    def hand_over(self, successor: _Target) -> None:
        """Give the queue (and, if its send fails, the message being sent) to `successor`; then end."""
        with self._ready:
            pending, self._queue = list(self._queue), deque()
            self._successor, self._stopping = successor, True
            self._ready.notify()
        successor._requeue(pending)

    def _requeue(self, pending: list[_Pending], front: bool = False) -> None:
        with self._ready:
            successor = self._successor
            if successor is None:
                if front:
                    self._queue.extendleft(reversed(pending))
                else:
                    self._queue.extend(pending)
                self._ready.notify()
        if successor is not None:  # handed over meanwhile (another reload): it goes on there
            successor._requeue(pending, front)

    def join(self, deadline: float) -> None:
        if self._thread.is_alive():
            # A send stuck in a slow endpoint is left behind: the thread is a daemon thread.
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def _next(self) -> _Pending | None:
        """The next message whose back-off is over; None once stopping and nothing more can go in time."""
        with self._ready:
            while True:
                if not self._queue:
                    if self._stopping:
                        return None
                    self._ready.wait()
                    continue
                now, head = time.monotonic(), self._queue[0]
                if self._stopping and max(now, head.due) >= self._deadline:
                    # Not even its next attempt fits in the stop's budget (nor, behind it, anything else).
                    log.warning("notify.dropped", url=self.masked, count=len(self._queue), reason="stopping")
                    self._queue.clear()
                    return None
                if head.due <= now:
                    return self._queue.popleft()
                self._ready.wait(head.due - now)

    def _loop(self) -> None:
        while (pending := self._next()) is not None:
            self._deliver(pending)

    def _deliver(self, pending: _Pending) -> None:
        message = pending.message
        pending.attempts += 1
        error = self._attempt(message)
        if error is None:
            log.debug(
                "notify.sent",
                url=self.masked,
                notification=message.event,
                attempt=pending.attempts,
                **_run_fields(message),
            )
            return
        delay = RETRY_DELAYS[pending.attempts - 1] if pending.attempts <= len(RETRY_DELAYS) else None
        log.warning(
            "notify.failed",
            url=self.masked,
            notification=message.event,
            attempt=pending.attempts,
            error=error,
            retry_in_s=delay,
            **_run_fields(message),
        )
        if delay is not None:  # first in line again: the messages behind it keep their order
            pending.due = time.monotonic() + delay
            self._requeue([pending], front=True)

    def _attempt(self, message: Message) -> str | None:
        """Send once; None when it went out, else why not (secrets masked)."""
        if self._plugin is None:
            return "Apprise cannot use this URL"
        CAPTURE.records = []
        try:
            sent = self._plugin.notify(
                body=message.body(), title=message.title(), notify_type=_TYPES.get(message.event, "info")
            )
            error = None if sent else "; ".join(CAPTURE.records[-2:]) or "Apprise reports a failure"
        except Exception as exc:  # a plugin's bug is one failed attempt, not a dead thread
            error = f"{type(exc).__name__}: {exc}"
        finally:
            CAPTURE.records = None
        return None if error is None else mask(error, self.url, self.masked)


def _run_fields(message: Message) -> dict[str, Any]:
    return {k: message.fields[k] for k in ("run_id", "file") if k in message.fields}
