"""The daemon loop: watch inboxes, claim settled files, hand runs to the executor, record results.

Signal handlers only set flags; `loop(now)` does one iteration and acts on them.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from watchdog.observers import Observer

from . import claims, logs, publish
from .catalog import Catalog, load_catalog
from .claims import Identity, LeaseClock
from .config import Inbox
from .entry import sweep
from .errors import ChuteError, ClaimLost, DefinitionError
from .executor import BrokenProcessPool, LocalExecutor
from .ledger import Ledger, State
from .pipeline import Outcome, RunSpec, failure, utcnow
from .runner import finish_delivery
from .systemd import Notifier, module_environ, status_line
from .watcher import EventHint, InboxWatcher, open_for_writing

TICK = 0.1
DEFER_MIN, DEFER_MAX = 2.0, 60.0
STOP_MARGIN = 10.0  # seconds past the kill grace before a stuck worker is given up on

log = logs.get("chute.service")


@dataclass
class Active:
    """A run this daemon holds: claimed, then running, then done."""

    spec: RunSpec
    inbox: Inbox
    future: object = None
    not_before: float = 0.0
    deferrals: int = 0
    pool_deaths: int = 0
    poison: str | None = None  # why it must go to quarantine without running again

    @property
    def claim(self) -> Path:
        return Path(self.spec.claim)


@dataclass
class Flags:
    stop: int = 0
    reload: bool = False


@dataclass
class Counts:
    done: int = 0
    failed: int = 0


class Service:
    def __init__(self, catalog: Catalog, notifier: Notifier | None = None):
        self.catalog = catalog
        self.notifier = notifier or Notifier()
        self.me = Identity.mine()
        self.flags = Flags()
        self.counts = Counts()
        self.wake = threading.Event()
        self.pending: deque[Active] = deque()
        self.running: dict[str, Active] = {}
        self.watchers: dict[Path, InboxWatcher] = {}
        self.ignored_seen: set[tuple[Path, str]] = set()
        self.unavailable: dict[Path, str] = {}
        self.lease_clock = LeaseClock(catalog.config.lease_timeout)
        self.lease_counter = 0
        self.next_heartbeat = 0.0
        self.next_watchdog = 0.0
        self.stopping_since: float | None = None
        self.cancelled_at: float | None = None
        self.stopped = False
        self.loop_errors = 0
        self.environ = tuple(module_environ(os.environ).items())
        cfg = catalog.config
        for folder in (cfg.state_dir, cfg.work_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(cfg.state_dir)
        if cfg.executor.kind != "local":
            # SPEC §4 names a dask executor; until it exists, say so rather than run locally unasked.
            raise ChuteError(f"executor.kind {cfg.executor.kind!r} is not available in this version; use 'local'")
        # The pool first: its workers must exist before the observer thread starts.
        self.executor = LocalExecutor(cfg.workers, cfg.log.format, cfg.log.level)
        self.observer = Observer()

    # --- start and stop ---

    def start(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)
        for inbox in self.catalog.config.inboxes:
            self._add_inbox(inbox)
        self.observer.start()
        self._clean_workspaces()
        self._heartbeat(time.monotonic(), force=True)
        log.info("daemon.started", pid=os.getpid(), daemon=self.me.daemon_id, config=str(self.catalog.config_file),
                 inboxes=[str(i.path) for i in self.catalog.config.inboxes], workers=self.catalog.config.workers)
        self.notifier.ready()
        self._status()

    def _on_stop_signal(self, signum, frame) -> None:
        self.flags.stop += 1
        self.wake.set()

    def _on_reload_signal(self, signum, frame) -> None:
        self.flags.reload = True
        self.wake.set()

    def serve(self) -> None:
        """Run until stopped by a signal."""
        self.start()
        try:
            while not self.stopped:
                try:
                    self.loop(time.monotonic())
                    self.loop_errors = 0
                except Exception as exc:  # a bug or an unforeseen OS error: log it, keep the files safe, go on
                    self.loop_errors += 1
                    log.exception("daemon.error", reason=f"{type(exc).__name__}: {exc}", consecutive=self.loop_errors)
                    time.sleep(min(5.0, 0.1 * 2 ** min(self.loop_errors, 6)))
                self.wake.wait(TICK)
                self.wake.clear()
        finally:
            self._close()

    def _close(self) -> None:
        for path in self._leased():
            claims.drop_lease(path, self.me.daemon_id)
            try:
                (claims.claimed_root(path) / self.me.daemon_id).rmdir()
            except OSError:
                pass  # not there, or (after a stuck stop) still holding a claim
        if self.observer.is_alive():
            self.observer.stop()
            self.observer.join(timeout=5)
        self.executor.shutdown(wait=True)
        self.ledger.close()
        self.notifier.close()
        log.info("daemon.stopped")

    # --- one iteration ---

    def loop(self, now: float) -> None:
        if self.flags.reload and not self.stopping_since:
            self.flags.reload = False
            self.reload()
        if self.flags.stop and self.stopping_since is None:
            self._begin_stop(now)
        if self.stopping_since is None:
            self._heartbeat(now)
            self._watch(now)
            self._dispatch(now)
        else:
            self._heartbeat(now, take_over=False)  # the runs draining are still ours: keep the lease fresh
            self._drain(now)
        self._collect(now)
        self._status()
        self._watchdog(now)

    # --- watching and claiming ---

    def _add_inbox(self, inbox: Inbox) -> None:
        cfg = self.catalog.config
        for folder in (inbox.path, inbox.outbox, inbox.quarantine, inbox.archive):
            if folder is not None:
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    log.warning("inbox.unavailable", inbox=str(inbox.path), folder=str(folder), reason=exc.strerror)
        w = InboxWatcher(inbox, cfg.settle(inbox), cfg.defaults.poll_interval, self.wake)
        self.watchers[inbox.path] = w
        self._schedule(w)
        log.info("inbox.watching", inbox=str(inbox.path), job=inbox.job, mode=w.mode, settle=w.settle)

    def _schedule(self, w: InboxWatcher) -> None:
        if w.mode != "events":
            return
        if w.watch is not None:
            try:
                self.observer.unschedule(w.watch)
            except (KeyError, ValueError):
                pass
            w.watch = None
        try:
            w.watch = self.observer.schedule(EventHint(w, time.monotonic), str(w.inbox.path), recursive=False)
        except OSError:
            w.watch = None  # not there now: the scans carry on, and it is scheduled when it comes back

    def _remove_inbox(self, path: Path) -> None:
        w = self.watchers.pop(path)
        if w.watch is not None:
            try:
                self.observer.unschedule(w.watch)
            except (KeyError, ValueError):
                pass
        if not any(Path(a.inbox.path) == path for a in [*self.running.values(), *self.pending]):
            claims.drop_lease(path, self.me.daemon_id)  # else _heartbeat keeps it until those runs are done
        log.info("inbox.removed", inbox=str(path))

    def _capacity(self) -> int:
        return self.catalog.config.workers - len(self.running) - len(self.pending)

    def _watch(self, now: float) -> None:
        settled = []
        for w in list(self.watchers.values()):
            if not w.due(now):
                continue
            scan = w.scan(now)
            self._availability(w, scan)
            for name, reason in scan.ignored:
                self._ignored(w, name, reason)
            for name in scan.symlinks:
                self._reject_symlink(w, name)
            settled += [(w.seen[name].changed_at, w, name, st) for name, st in scan.settled]
        if not settled or self._capacity() <= 0:
            return
        busy = open_for_writing()
        for _, w, name, st in sorted(settled, key=lambda x: x[0]):
            if self._capacity() <= 0:
                break
            if (st.st_dev, st.st_ino) in busy:
                w.wait_longer(name, now)
                log.debug("file.still_open", inbox=str(w.inbox.path), file=name)
                continue
            self._claim(w, name)

    def _availability(self, w: InboxWatcher, scan) -> None:
        path = w.inbox.path
        if not scan.available and w.available is not False:
            log.warning("inbox.unavailable", inbox=str(path), reason=scan.error)
        elif scan.available and w.available is False:
            log.info("inbox.available", inbox=str(path))
            self._schedule(w)
            for active in self.pending:  # runs deferred by the outage go now, not after their backoff
                if Path(active.inbox.path) == path:
                    active.not_before, active.deferrals = 0.0, 0
        w.available = scan.available

    def _ignored(self, w: InboxWatcher, name: str, reason: str) -> None:
        key = (w.inbox.path, name)
        if key in self.ignored_seen or name == claims.STATE_DIR:
            return
        if len(self.ignored_seen) > 10000:
            self.ignored_seen.clear()
        self.ignored_seen.add(key)
        log.info("file.ignored", inbox=str(w.inbox.path), file=name, reason=reason)

    def _claim(self, w: InboxWatcher, name: str) -> None:
        inbox = w.inbox
        try:
            got = claims.claim(inbox.path, name, self.me)
        except OSError as exc:
            log.warning("file.claim_failed", inbox=str(inbox.path), file=name, reason=exc.strerror or str(exc))
            return
        w.forget(name)
        if got is None:
            log.info("file.taken_elsewhere", inbox=str(inbox.path), file=name)
            return
        run_id, folder = got
        try:
            self._queue(inbox, run_id, folder, name)
        except BaseException:
            claims.release(folder, inbox.path)  # not queued (the ledger failed?): back where it was
            raise
        log.info("file.claimed", run_id=run_id, job=inbox.job, inbox=str(inbox.path), file=name)

    def _queue(self, inbox: Inbox, run_id: str, claim: Path, name: str) -> None:
        spec = self._spec(inbox, run_id, claim, name)
        self.ledger.queued(run_id, str(inbox.path), inbox.job, name, str(claim), utcnow())
        self.pending.append(Active(spec, inbox))

    def _spec(self, inbox: Inbox, run_id: str, claim: Path, name: str) -> RunSpec:
        cfg = self.catalog.config
        return RunSpec(
            run_id=run_id, job=self.catalog.jobs[inbox.job], input_path=str(claim / name), input_name=name,
            outbox=str(inbox.outbox), quarantine=str(inbox.quarantine), work_dir=str(cfg.work_dir),
            default_timeout=cfg.defaults.timeout, host=self.me.host, environ=self.environ, python=sys.executable,
            inbox=str(inbox.path), claim=str(claim), on_success=inbox.on_success,
            archive=str(inbox.archive) if inbox.archive else None,
            cancel_file=str(cfg.work_dir / f"{run_id}.cancel"),
        )

    def _reject_symlink(self, w: InboxWatcher, name: str) -> None:
        """A symlink is never followed: it goes to quarantine as it is, with the reason."""
        inbox = w.inbox
        run_id = claims.new_run_id()
        spec = self._spec(inbox, run_id, inbox.path, name)
        reason = "the file is a symbolic link; chute does not follow links out of an inbox"
        try:
            final = quarantine_without_run(spec, reason, Path(inbox.path) / name, move=True)
        except OSError as exc:
            log.warning("file.reject_failed", inbox=str(inbox.path), file=name, reason=exc.strerror or str(exc))
            return
        log.warning("file.rejected", inbox=str(inbox.path), file=name, reason=reason, result=str(final))

    # --- running ---

    def _dispatch(self, now: float) -> None:
        waiting = deque()
        while self.pending and len(self.running) < self.catalog.config.workers:
            active = self.pending.popleft()
            if active.not_before > now:
                waiting.append(active)
                continue
            if active.poison is not None:  # its quarantine met an outage: try that again, never the run
                self._poison(active, active.poison)
                continue
            active.future = self.executor.submit(active.spec)
            active.future.add_done_callback(lambda _: self.wake.set())
            self.running[active.spec.run_id] = active
            self.ledger.started(active.spec.run_id, utcnow())
        self.pending.extendleft(reversed(waiting))

    def _collect(self, now: float) -> None:
        broken = False
        for run_id, active in list(self.running.items()):
            if not active.future.done():
                continue
            try:
                result = active.future.result()
            except BrokenProcessPool:
                broken = True
                continue
            except Exception as exc:  # a bug in the worker: keep the claim, try again later
                log.error("run.error", **active.spec.context(), reason=f"{type(exc).__name__}: {exc}")
                self._defer(active, now, f"{type(exc).__name__}: {exc}")
                continue
            del self.running[run_id]
            self._record(active, result, now)
        if broken or self.executor.broken:
            self._pool_died(now)

    def _record(self, active: Active, result, now: float) -> None:
        spec = active.spec
        Path(spec.cancel_file).unlink(missing_ok=True)
        sizes = dict(size=result.input_size, sha256=result.input_sha256)
        if result.status == "succeeded":
            self.counts.done += 1
            self.ledger.finished(spec.run_id, State.SUCCEEDED, utcnow(), result.result_dir, **sizes)
        elif result.status == "failed":
            self.counts.failed += 1
            self.ledger.finished(spec.run_id, State.FAILED, utcnow(), result.result_dir, result.error, **sizes)
        elif result.status == "released":
            self._release(active)
        elif result.status == "lost":
            self.ledger.finished(spec.run_id, State.DISCARDED, utcnow(), None, result.error, **sizes)
        else:  # deferred: an outage of a folder the run needs; the claim is kept
            self._defer(active, now, (result.error or {}).get("reason", "deferred"))
            return
        self._rescan()

    def _defer(self, active: Active, now: float, reason: str) -> None:
        self.running.pop(active.spec.run_id, None)
        active.deferrals += 1
        delay = min(DEFER_MAX, DEFER_MIN * 2 ** (active.deferrals - 1))
        active.not_before = now + delay
        self.ledger.requeued(active.spec.run_id)
        self.pending.append(active)
        log.warning("run.deferred", run_id=active.spec.run_id, job=active.spec.job.name, inbox=active.spec.inbox,
                    file=active.spec.input_name, reason=reason, retry_in_s=delay)

    def _pool_died(self, now: float) -> None:
        """A pool worker died (not a module: the worker itself). Rebuild and run its runs again."""
        lost = list(self.running.values())
        self.running.clear()
        log.error("executor.broken", runs=[a.spec.run_id for a in lost])
        for a in lost:
            sweep(f"CHUTE_RUN_ID={a.spec.run_id}")
        self.executor.rebuild()
        for a in lost:
            a.pool_deaths += 1
            if a.pool_deaths >= self.catalog.config.max_crashes:
                self._poison(a, f"the worker died during {a.pool_deaths} runs of this file")
            else:
                self.ledger.requeued(a.spec.run_id)
                self.pending.appendleft(a)

    def _poison(self, active: Active, reason: str) -> None:
        spec = active.spec
        try:
            final = quarantine_without_run(spec, reason, Path(spec.input_path), move=True, claim=active.claim)
        except ClaimLost:
            self.ledger.finished(spec.run_id, State.DISCARDED, utcnow(), None, failure("another daemon took over this claim"))
            return
        except OSError as exc:
            active.poison = reason
            self._defer(active, time.monotonic(), f"cannot quarantine: {exc}")
            return
        self.counts.failed += 1
        self.ledger.finished(spec.run_id, State.FAILED, utcnow(), str(final), failure(reason))
        log.warning("run.quarantined", run_id=spec.run_id, job=spec.job.name, inbox=spec.inbox,
                    file=spec.input_name, reason=reason, result=str(final))

    def _release(self, active: Active) -> None:
        spec = active.spec
        try:
            back = claims.release(active.claim, Path(active.inbox.path))
        except OSError as exc:
            log.error("run.release_failed", **spec.context(), reason=exc.strerror or str(exc))
            return
        self.ledger.finished(spec.run_id, State.RELEASED, utcnow(), str(back) if back else None)
        log.info("run.released", run_id=spec.run_id, job=spec.job.name, inbox=spec.inbox, file=spec.input_name,
                 to=str(back) if back else None)

    def _rescan(self) -> None:
        for w in self.watchers.values():
            w.hint()

    # --- leases, take-over and recovery ---

    def _heartbeat(self, now: float, force: bool = False, take_over: bool = True) -> None:
        if not force and now < self.next_heartbeat:
            return
        self.next_heartbeat = now + min(5.0, self.catalog.config.lease_timeout / 4)
        self.lease_counter += 1
        for path in self._leased():
            try:
                claims.write_lease(path, self.me, self.lease_counter)
            except OSError:
                continue  # an unavailable inbox: logged by its scan
            w = self.watchers.get(path)
            if not take_over or w is None:
                continue
            for owner in claims.owners(path):
                if owner != self.me.daemon_id and self._owner_dead(path, owner, now):
                    self._take_over(w.inbox, owner)

    def _leased(self) -> set[Path]:
        """Inboxes we hold a lease in: the watched ones, and any a run of ours still has a claim in
        (an inbox a reload removed keeps its lease until its runs are done)."""
        held = {Path(a.inbox.path) for a in [*self.running.values(), *self.pending]}
        return set(self.watchers) | held

    def _owner_dead(self, inbox: Path, owner: str, now: float) -> bool:
        lease = claims.read_lease(inbox, owner)
        if claims.dead_on_this_host(self.me, owner, lease):
            return True  # its process is gone: no need to wait out the lease
        # Alive on this host (frozen, hung on a share) or on another host: the lease decides
        # (SPEC §5), so a stopped daemon's claims are run again after lease_timeout.
        return self.lease_clock.stale(inbox, owner, lease, now)

    def _take_over(self, inbox: Inbox, owner: str) -> None:
        for old in claims.claims_of(inbox.path, owner):
            claim = claims.take_over(old, inbox.path, self.me)
            if claim is None:
                continue  # another daemon took it first
            run_id = claims.run_id_of(claim)
            log.warning("run.taken_over", run_id=run_id, job=inbox.job, inbox=str(inbox.path),
                        file=claims.input_of(claim), owner=owner, crashes=claims.crashes(claim))
            self._adopt(inbox, claim)
        claims.drop_lease(inbox.path, owner)
        try:
            (claims.claimed_root(inbox.path) / owner).rmdir()
        except OSError:
            pass

    def _adopt(self, inbox: Inbox, claim: Path) -> None:
        """Finish or re-run a claim whose daemon died (SPEC §5: a crash loses nothing)."""
        run_id = claims.run_id_of(claim)
        sweep(f"CHUTE_RUN_ID={run_id}")  # module processes the dead daemon left running
        shutil.rmtree(self.catalog.config.work_dir / run_id, ignore_errors=True)
        name = claims.input_of(claim)
        if inbox.job not in self.catalog.jobs:
            claims.release(claim, inbox.path)
            return
        spec = self._spec(inbox, run_id, claim, name or "input")
        if claim.name.endswith(claims.COMMIT_SUFFIX):
            try:
                status = finish_delivery(spec, claim, name)
            except OSError as exc:
                # A folder it needs is unavailable. Its result may be out already: the runner
                # finishes the delivery when it can (runner._resume), and never runs it again.
                log.warning("run.deferred", **spec.context(), reason=f"cannot finish delivering the result: {exc}")
                self._queue(inbox, run_id, claim.with_name(run_id), name or "input")
                return
            if status is not None:
                self.ledger.queued(run_id, str(inbox.path), inbox.job, spec.input_name, str(claim), utcnow())
                self.ledger.finished(run_id, State(status), utcnow())
                log.info("run.recovered", **spec.context(), state=status)
                return
        if name is None:
            claims.remove(claim)
            return
        claim = claims.uncommit(claim)
        for folder in (inbox.outbox, inbox.quarantine):
            shutil.rmtree(publish.build_dir(folder, run_id), ignore_errors=True)
        spec = self._spec(inbox, run_id, claim, name)
        self.ledger.queued(run_id, str(inbox.path), inbox.job, name, str(claim), utcnow())
        active = Active(spec, inbox)
        crashed = claims.crashes(claim)
        if crashed >= self.catalog.config.max_crashes:
            self._poison(active, f"the daemon died during {crashed} runs of this file")
            return
        self.pending.appendleft(active)

    def _clean_workspaces(self) -> None:
        """Remove workspaces and cancel files no claim of any live run refers to."""
        held = set()
        for w in self.watchers.values():
            for owner in claims.owners(w.inbox.path):
                held |= {claims.run_id_of(c) for c in claims.claims_of(w.inbox.path, owner)}
        work = self.catalog.config.work_dir
        for entry in work.iterdir():
            run_id = entry.name.removesuffix(".cancel")
            if run_id not in held or entry.name.endswith(".cancel"):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    # --- reload ---

    def reload(self) -> None:
        self.notifier.reloading()
        try:
            new = load_catalog(self.catalog.config_file)
        except DefinitionError as exc:
            log.error("daemon.reload_failed", problems=[str(p) for p in exc.problems])
            self.notifier.ready()
            return
        except ChuteError as exc:
            log.error("daemon.reload_failed", problems=[str(exc)])
            self.notifier.ready()
            return
        old = {i.path: i for i in self.catalog.config.inboxes}
        now = {i.path: i for i in new.config.inboxes}
        restart_needed = [k for k in ("state_dir", "work_dir", "workers", "executor")
                          if getattr(new.config, k) != getattr(self.catalog.config, k)]
        self.catalog = new
        for path in set(old) - set(now):
            self._remove_inbox(path)
        for path, inbox in now.items():
            if path not in old:
                self._add_inbox(inbox)
            elif inbox != old[path]:
                self._remove_inbox(path)
                self._add_inbox(inbox)
        log.info("daemon.reloaded", inboxes=[str(p) for p in now], jobs=sorted(new.jobs),
                 added=[str(p) for p in set(now) - set(old)], removed=[str(p) for p in set(old) - set(now)],
                 needs_restart=restart_needed or None)
        self.notifier.ready()

    # --- stopping ---

    def _begin_stop(self, now: float) -> None:
        self.stopping_since = now
        cfg = self.catalog.config
        self.notifier.stopping()
        self.notifier.extend_timeout(cfg.shutdown_timeout + 30)
        log.info("daemon.stopping", running=len(self.running), queued=len(self.pending), timeout=cfg.shutdown_timeout)
        while self.pending:
            self._release(self.pending.popleft())

    def _drain(self, now: float) -> None:
        cfg = self.catalog.config
        while self.pending:  # deferred runs coming back while stopping
            self._release(self.pending.popleft())
        if not self.running:
            self.stopped = True
            return
        if self.cancelled_at is None and (self.flags.stop > 1 or now - self.stopping_since >= cfg.shutdown_timeout):
            self.cancelled_at = now
            log.info("daemon.cancelling", runs=sorted(self.running))
            for active in self.running.values():
                Path(active.spec.cancel_file).touch()
        if self.cancelled_at is not None and now - self.cancelled_at > self.running_grace() + STOP_MARGIN:
            self._abandon()

    def running_grace(self) -> float:
        return max((a.spec.kill_grace for a in self.running.values()), default=0.0)

    def _abandon(self) -> None:
        """Workers that did not stop in time: kill them and their modules, release the inputs."""
        log.error("executor.stuck", runs=sorted(self.running))
        self.executor.shutdown(wait=False)
        for p in list(getattr(self.executor.pool, "_processes", {}).values()):
            p.kill()
        for active in list(self.running.values()):
            sweep(f"CHUTE_RUN_ID={active.spec.run_id}")
            shutil.rmtree(Path(active.spec.work_dir) / active.spec.run_id, ignore_errors=True)
            self._release(active)
        self.running.clear()
        self.stopped = True

    # --- systemd ---

    def _status(self) -> None:
        self.notifier.status(status_line(len(self.pending), len(self.running), self.counts.done, self.counts.failed))

    def healthy(self) -> bool:
        watching = not any(w.mode == "events" for w in self.watchers.values()) or self.observer.is_alive()
        # A loop that keeps failing is not making progress: let systemd's watchdog restart it.
        return watching and not self.executor.broken and self.loop_errors < 3

    def _watchdog(self, now: float) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None or now < self.next_watchdog:
            return
        if self.healthy():
            self.notifier.watchdog()
            self.next_watchdog = now + interval


def quarantine_without_run(spec: RunSpec, reason: str, path: Path, *, move: bool, claim: Path | None = None) -> Path:
    """Quarantine a file no module ran on (a symlink, a poison file), with report.json.

    With `claim` (the file's claim folder), the claim is committed and marked first, as a
    run's delivery is: a crash between moving the input and revealing the folder is then
    finished by recovery, instead of leaving the input in a hidden build folder.
    """
    if claim is not None:
        claim = claims.commit(claim)
        path = claim / spec.input_name
    try:
        stamp = utcnow()
        outcome = Outcome(status="failed", started_at=stamp, finished_at=stamp, error=failure(reason))
        st = os.lstat(path)
        info = {"name": spec.input_name, "size": st.st_size, "sha256": None, "inbox": spec.inbox}
        build = publish.build_report(spec, outcome, Path(spec.work_dir) / spec.run_id, info)
        if claim is not None:
            claims.mark(claim, claims.QUARANTINING)
    except OSError:
        if claim is not None:
            claims.uncommit(claim)
        raise
    if os.path.islink(path):
        target = os.readlink(path)  # the link itself is moved; its target is never read
        try:
            os.rename(path, build / spec.input_name)
        except OSError:
            os.symlink(target, build / spec.input_name)
            os.unlink(path)
    else:
        publish.add_input(build, path, spec.input_name, move=move)
    final = publish.reveal(build, publish.result_name(spec.input_name))
    if claim is not None:
        claims.remove(claim)
    return final


def run_daemon(catalog: Catalog) -> None:
    try:
        service = Service(catalog)
    except OSError as exc:
        raise ChuteError(f"cannot start: {exc.strerror or exc}: {exc.filename or ''}") from exc
    service.serve()
