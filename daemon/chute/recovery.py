"""After a crash: leases kept fresh, dead daemons' claims taken over, and the ledger squared with the disk.

A daemon on this host whose process is gone is taken over at once; any other
(another host's, or one frozen here) only when its lease has not changed for
`lease_timeout` on our own monotonic clock (contract §5). Returns values; the
service decides what to run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from . import claims, logs, publish
from .config import Inbox
from .leases import Identity, LeaseClock, dead_on_this_host, drop_lease, leases_dir, read_lease, write_lease
from .ledger import Ledger, Run, State
from .run import failure, utcnow

log = logs.get("chute.recovery")
# Other daemons' leases and claims are judged this often (at most; a quarter of lease_timeout when that is
# shorter), so a dead daemon's claims are taken over soon after its lease_timeout.
HEARTBEAT = 5.0
# Each of our leases is rewritten every quarter of lease_timeout: it always changes well within another
# daemon's lease_timeout. Not at every beat: 500 inboxes were 6,000 lease files written a minute (issue 21).
REWRITES_PER_TIMEOUT = 4


@dataclass(frozen=True)
class Adopted:
    """A claim taken over from a dead daemon: to be finished or run again."""

    inbox: Inbox
    claim: Path
    run_id: str
    name: str | None  # None: its input has already left it
    crashes: int
    owner: str
    owner_gone: bool  # its daemon is known dead on this host (not merely silent): all it left may be swept


class Recovery:
    def __init__(self, me: Identity, lease_timeout: float):
        self.me = me
        self.clock = LeaseClock(lease_timeout)
        self.interval = min(HEARTBEAT, lease_timeout / 4)
        self.rewrite = lease_timeout / REWRITES_PER_TIMEOUT
        self.written: dict[Path, float] = {}  # when each of our leases was last rewritten
        self.counter = 0
        self.next_beat = 0.0
        self.shared: set[Path] = set()  # watched inboxes where another daemon holds a lease too
        self.claimed: dict[Path, str] = {}  # each watched inbox's claimed folder, listed at every beat

    def heartbeat(
        self, now: float, leased: set[Path], watched: dict[Path, Inbox], *, take_over: bool = True, force: bool = False
    ) -> list[Adopted]:
        """Rewrite our leases; with `take_over`, take the claims of daemons judged dead in the watched inboxes."""
        if not force and now < self.next_beat:
            return []
        self.next_beat = now + self.interval
        self.counter += 1
        adopted: list[Adopted] = []
        self.written = {path: when for path, when in self.written.items() if path in leased}
        for path in leased:
            if force or now + self.interval > self.written.get(path, -math.inf) + self.rewrite:  # not late by a beat
                try:
                    write_lease(path, self.me, self.counter)
                except OSError:
                    continue  # an unavailable inbox: its scan logs it
                self.written[path] = now
                if path in watched:
                    # Peers' leases decide only whether runs are claimed ahead: looked at as often as ours
                    # is rewritten, not at every beat (500 inboxes listed twice each beat: issue 21).
                    self._note_peers(path)
            if path in watched and take_over:
                adopted += self._judge(watched[path], now)
        self.shared &= set(watched)
        if len(self.claimed) > len(watched):
            self.claimed = {path: folder for path, folder in self.claimed.items() if path in watched}
        return adopted

    def _note_peers(self, inbox: Path) -> None:
        try:
            mine = f"{self.me.daemon_id}.json"
            others = any(p.name != mine and not p.name.startswith(".") for p in leases_dir(inbox).iterdir())
        except OSError:
            return
        if others:
            self.shared.add(inbox)
        else:
            self.shared.discard(inbox)

    def _judge(self, inbox: Inbox, now: float) -> list[Adopted]:
        taken = []
        folder = self.claimed.get(inbox.path)
        if folder is None:
            folder = self.claimed[inbox.path] = str(claims.claimed_root(inbox.path))
        for owner in claims.owners(folder):
            if owner == self.me.daemon_id:
                continue
            lease = read_lease(inbox.path, owner)
            gone = dead_on_this_host(self.me, owner, lease) is True  # its process is gone: no need to wait
            # Alive on this host (frozen, hung on a share) or on another host: the lease decides.
            if gone or self.clock.stale(inbox.path, owner, lease, now):
                taken += self._take_over(inbox, owner, gone, self._charge(lease))
        return taken

    def _charge(self, lease: dict | None) -> bool:
        """Whether the runs of a daemon taken over count as crashes of their files.

        Runs execute in workers: a file that kills its run kills a worker or a module, and
        that is counted where it happens (executor, step engine). The daemon itself dying
        on this boot of this host (kill -9, a stop gone wrong) or being frozen is not the
        files' doing. A host that rebooted, or another host gone silent, may have gone
        down because of a file (a kernel out of memory): those runs count.
        """
        if lease is None:
            return True
        return lease.get("host") != self.me.host or lease.get("boot_id") != self.me.boot_id

    def _take_over(self, inbox: Inbox, owner: str, gone: bool, charge: bool) -> list[Adopted]:
        taken = []
        for old in claims.claims_of(inbox.path, owner):
            claim = claims.take_over(old, inbox.path, self.me, charge)
            if claim is None:
                continue  # another daemon took it first
            a = Adopted(
                inbox, claim, claims.run_id_of(claim), claims.input_of(claim), claims.crashes(claim), owner, gone
            )
            log.warning(
                "run.taken_over",
                run_id=a.run_id,
                job=inbox.job,
                inbox=str(inbox.path),
                file=a.name,
                owner=owner,
                crashes=a.crashes,
            )
            taken.append(a)
        drop_lease(inbox.path, owner)
        self.clock.forget(inbox.path, owner)
        try:
            (claims.claimed_root(inbox.path) / owner).rmdir()
        except OSError:
            pass
        return taken

    def release(self, inboxes: set[Path]) -> None:
        """At a clean stop: our leases and (now empty) claimed folders go."""
        for path in inboxes:
            drop_lease(path, self.me.daemon_id)
            try:
                (claims.claimed_root(path) / self.me.daemon_id).rmdir()
            except OSError:
                pass  # not there, or (after a stuck stop) still holding a claim for recovery


def reconcile_ledger(ledger: Ledger, held: set[str], inboxes: dict[Path, Inbox]) -> None:
    """Finish the ledger rows left queued or running by a dead daemon of ours that no claim of ours holds."""
    for run in ledger.active():
        if run.run_id in held:
            continue
        state, result, error = reconcile(run, inboxes)
        ledger.finished(run.run_id, state, utcnow(), None if result is None else str(result), error or None)
        log.info(
            "run.reconciled",
            run_id=run.run_id,
            job=run.job,
            inbox=run.inbox,
            file=run.input_name,
            state=state.value,
            result=None if result is None else str(result),
        )


def reconcile(run: Run, inboxes: dict[Path, Inbox]) -> tuple[State, Path | None, dict]:
    """A ledger row left queued or running by a daemon that died: what became of that run, from the disk.

    Its result may be out (the daemon died after delivering, before recording); else
    its claim went to another daemon, or back to the inbox: it is no longer ours.
    """
    inbox = inboxes.get(Path(run.inbox))
    if inbox is not None:
        for folder, state in ((inbox.outbox, State.SUCCEEDED), (inbox.quarantine, State.FAILED)):
            found = find_result(folder, run.input_name, run.run_id)
            if found is not None:
                return state, found, {}
    reason = "the daemon stopped before this run finished; its claim was taken over or released"
    return State.DISCARDED, None, failure(reason)


def find_result(folder: Path, input_name: str, run_id: str, limit: int = 1000) -> Path | None:
    """The result folder (`stem`, `stem-2`, ...) whose manifest or report names `run_id`."""
    stem = publish.result_name(input_name)
    missing = 0
    for n in range(1, limit):
        candidate = folder / (stem if n == 1 else f"{stem}-{n}")
        if not candidate.is_dir():
            missing += 1
            if missing > 3:  # results a user deleted leave gaps; a run of missing names ends the search
                return None
            continue
        missing = 0
        for doc in ("manifest.json", "report.json"):
            try:
                if json.loads((candidate / doc).read_text())["run_id"] == run_id:
                    return candidate
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return None
