"""The daemon loop driven in-process: `Service.loop(now)` with a fake clock and a fake executor.

Real folders, real claims and leases, a real SQLite ledger and the real watcher
(polling); only the executor is a stand-in (it records what it was given and
the test decides each run's result), and time is a number the test moves.
Nothing here sleeps.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest
import structlog
from chute import claims, leases
from chute.catalog import load_catalog
from chute.executor import WorkerLost
from chute.ledger import Ledger
from chute.recovery import HEARTBEAT
from chute.run import Fault, RunResult, RunStatus
from chute.service import Service, Stop

from tests.harness import Setup, claimed_inputs, drop, files, wait_until

SETTLE = 1.0
POLL = 5.0
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # the daemon's: stop, stop, reload


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class FakeExecutor:
    """The executor surface, with runs that end when the test says so.

    Why not the real LocalExecutor: its runs end when their module processes do, in real
    time, while these tests move a number for a clock and decide each run's outcome and
    moment (the loop's reaction to it is what they test). tests/acceptance drives the
    real executor end to end through `chute run`.
    """

    def __init__(self, slots: int = 2) -> None:
        self.slots = slots
        self.spare = 0  # runs worth claiming ahead of a free slot (LocalExecutor.ahead)
        self.runs: dict[str, tuple] = {}
        self.cancelled: list[str] = []
        self.killed = False
        self.closed = False
        self.swept: list[str] = []

    def free(self) -> int:
        return self.slots - len(self.runs)

    def ahead(self) -> int:
        return self.spare

    def submit(self, spec) -> Future:
        future: Future = Future()
        self.runs[spec.run_id] = (spec, future)
        return future

    def cancel(self, run_id: str) -> None:
        self.cancelled.append(run_id)

    def where(self, run_id: str) -> str:
        return "fake/0"

    def sweep(self, marker: str) -> None:
        self.swept.append(marker)

    def supervise(self, now: float) -> float | None:
        return None

    def healthy(self) -> bool:
        return True

    def progress(self) -> dict[str, dict]:
        return {}

    def workers(self) -> list[dict]:
        return []

    def kill(self) -> None:
        self.killed = True

    def close(self) -> None:
        self.closed = True

    def finish(self, run_id: str, status: RunStatus = RunStatus.SUCCEEDED, **fields) -> None:
        spec, future = self.runs.pop(run_id)
        future.set_result(RunResult(run_id, status, **fields))

    def lose(self, run_id: str) -> None:
        spec, future = self.runs.pop(run_id)
        future.set_exception(WorkerLost("its worker (pid 4242) died: killed by signal 9"))


def configured(tmp_path: Path) -> tuple[Setup, dict, Path]:
    """A config with one poll inbox (made): the setup, the inbox, the config file."""
    setup = Setup(
        tmp_path,
        defaults={"settle": SETTLE, "poll_interval": POLL, "timeout": 60},
        shutdown_timeout=30,
        lease_timeout=120,
    )
    inbox = setup.inbox(watch="poll")
    Path(inbox["path"]).mkdir(exist_ok=True)
    return setup, inbox, setup.write()


@pytest.fixture
def daemon(tmp_path):
    """A started Service on a poll inbox, its clock and executor; closed after (which restores the signal handlers)."""
    setup, inbox, config = configured(tmp_path)
    clock, executor = Clock(), FakeExecutor()
    service = Service(load_catalog(config), executor=executor, clock=clock)
    service.start()
    yield service, clock, executor, setup, inbox
    if service.state != Stop.STOPPED or not executor.closed:
        service.close()


def settle(service: Service, clock: Clock) -> None:
    """A listing of the inbox now (as its next poll makes it), and another look `settle` later: what
    was dropped is now settled (and claimed)."""
    for w in service.intake.watchers.values():
        w.rescan()
    service.loop(clock.advance(0.1))
    service.loop(clock.advance(SETTLE + 0.1))


def states(setup: Setup) -> dict[str, str]:
    ledger = Ledger(Path(setup.config.get("state_dir", setup.root / "chute-state")), readonly=True)
    try:
        return {r.run_id: r.state.value for r in ledger.active() + ledger.recent(100)}
    finally:
        ledger.close()


def test_a_settled_file_is_claimed_dispatched_and_its_result_recorded(daemon):
    service, clock, executor, setup, inbox = daemon
    path = Path(inbox["path"])
    drop(path, "clip.bin", b"clip\n")

    service.loop(clock.advance(0.1))
    assert executor.runs == {} and files(path) == ["clip.bin"]  # seen once: not settled yet
    service.loop(clock.advance(SETTLE + 0.1))

    [(run_id, (spec, _))] = executor.runs.items()
    assert spec.input_name == "clip.bin" and spec.claim == claimed_inputs(path)[0].parent
    assert files(path) == [] and states(setup) == {run_id: "running"}
    executor.finish(run_id, RunStatus.SUCCEEDED, result_dir=Path(inbox["outbox"]) / "clip")
    service.loop(clock.advance(0.01))
    assert states(setup) == {run_id: "succeeded"}
    assert service.runs.counts == {"done": 1, "failed": 0}


def test_a_deferred_run_waits_without_holding_a_slot(daemon):
    service, clock, executor, setup, inbox = daemon
    executor.slots = 1
    path = Path(inbox["path"])
    drop(path, "first.bin", b"1\n")
    settle(service, clock)
    [first] = executor.runs
    executor.finish(first, RunStatus.DEFERRED, fault=Fault.OUTAGE, error={"reason": "the outbox is gone"})
    service.loop(clock.advance(0.01))
    drop(path, "second.bin", b"2\n")
    settle(service, clock)  # the deferred run is backing off: the second file takes the slot
    [second] = executor.runs
    assert second != first and states(setup)[first] == "queued"
    executor.finish(second)
    service.loop(clock.advance(60))  # past the back-off: the first runs again, under its claim
    assert list(executor.runs) == [first]


def test_a_run_claimed_ahead_starts_the_moment_a_slot_frees_and_goes_back_on_stop(daemon):
    service, clock, executor, setup, inbox = daemon
    executor.slots, executor.spare = 1, 1
    path = Path(inbox["path"])
    names = {"a.bin", "b.bin", "c.bin"}
    for name in names:
        drop(path, name, name.encode())
    settle(service, clock)
    [first] = executor.runs
    running = executor.runs[first][0].input_name
    claimed = {p.name for p in claimed_inputs(path)}
    assert len(claimed) == 2 and running in claimed  # one more is claimed, waiting for the slot
    [ahead] = claimed - {running}
    [left] = files(path)

    executor.finish(first)
    service.loop(clock.advance(0.01))  # one iteration: the run claimed ahead starts, the last file takes its place
    [second] = executor.runs
    assert executor.runs[second][0].input_name == ahead
    assert files(path) == [] and {p.name for p in claimed_inputs(path)} == names

    service._on_signal(signal.SIGTERM, None)
    service.loop(clock.advance(0.01))
    assert files(path) == [left]  # what waited goes back under its own name; the running one drains
    assert {p.name for p in claimed_inputs(path)} == {running, ahead}  # (the fake executor delivers nothing)


def test_nothing_is_claimed_ahead_while_another_daemon_shares_the_inbox(daemon):
    service, clock, executor, setup, inbox = daemon
    executor.slots, executor.spare = 1, 1
    path = Path(inbox["path"])
    peer = leases.leases_dir(path) / "otherhost.4242.abcdef.json"
    peer.parent.mkdir(parents=True, exist_ok=True)
    peer.write_text("{}")
    service.loop(clock.advance(HEARTBEAT + 0.1))  # a heartbeat sees the peer's lease
    for name in ("a.bin", "b.bin", "c.bin"):
        drop(path, name, name.encode())
    settle(service, clock)
    assert len(executor.runs) == 1 and len(claimed_inputs(path)) == 1  # the others stay for the peer
    assert len(files(path)) == 2

    peer.unlink()  # the peer stopped
    service.loop(clock.advance(HEARTBEAT + 0.1))
    settle(service, clock)
    assert len(claimed_inputs(path)) == 2 and len(files(path)) == 1


def test_a_run_whose_worker_cannot_be_started_waits_and_starts_later(daemon):
    service, clock, executor, setup, inbox = daemon
    path = Path(inbox["path"])
    real_submit = executor.submit

    # Injected: a real fork failing with EAGAIN needs the host's process limit reached (RLIMIT_NPROC
    # counts every process of the user, the other tests' too), which no test can set up safely here.
    def no_worker(spec):
        raise BlockingIOError(11, "Resource temporarily unavailable")

    executor.submit = no_worker
    drop(path, "clip.bin", b"clip\n")
    settle(service, clock)
    [run] = service.queue.ledger.active()
    assert run.state.value == "queued" and len(claimed_inputs(path)) == 1  # deferred under its claim, not dropped
    assert "cannot start a worker: BlockingIOError" in run.error["reason"]
    executor.submit = real_submit
    service.loop(clock.advance(60))  # past the back-off
    assert [spec.input_name for spec, _ in executor.runs.values()] == ["clip.bin"]


def test_when_the_ledger_fails_mid_batch_the_files_not_queued_go_back_to_the_inbox(daemon, monkeypatch):
    service, clock, executor, setup, inbox = daemon
    executor.slots = 3
    path = Path(inbox["path"])
    for name in ("a.bin", "b.bin", "c.bin"):
        drop(path, name, name.encode())
    real_queued, calls = service.queue.ledger.queued, []

    # Injected: a real ENOSPC from SQLite in the middle of one batch, and not before or after it,
    # cannot be timed from outside (tests/acceptance/test_outages.py fills a real disk instead).
    def failing_second(*args):
        calls.append(args)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_queued(*args)

    monkeypatch.setattr(service.queue.ledger, "queued", failing_second)
    for w in service.intake.watchers.values():
        w.rescan()
    service.loop(clock.advance(0.1))
    with pytest.raises(OSError):
        service.loop(clock.advance(SETTLE + 0.1))
    assert len(executor.runs) + len(service.queue.pending) == 1  # the first is queued
    assert len(claimed_inputs(path)) == 1 and len(files(path)) == 2  # the two others are back, none stranded


def test_a_worker_death_charges_only_its_run_and_runs_it_again(daemon):
    service, clock, executor, setup, inbox = daemon
    path = Path(inbox["path"])
    drop(path, "a.bin", b"a\n")
    drop(path, "b.bin", b"b\n")
    settle(service, clock)
    lost, other = sorted(executor.runs, key=lambda r: executor.runs[r][0].input_name)
    claim = executor.runs[lost][0].claim
    claims.mark(claim, claims.RUNNING)  # as the worker does when the run starts
    executor.lose(lost)
    service.loop(clock.advance(0.01))
    assert claims.crashes(claim) == 1  # counted toward max_crashes
    assert lost in executor.runs and other in executor.runs  # run again at once; the other untouched
    assert claims.crashes(executor.runs[other][0].claim) == 0


def test_stop_drains_then_cancels_then_releases_the_input(daemon):
    service, clock, executor, setup, inbox = daemon
    path = Path(inbox["path"])
    drop(path, "long.bin", b"long\n")
    settle(service, clock)
    [run_id] = executor.runs
    service._on_signal(signal.SIGTERM, None)
    service.loop(clock.advance(0.01))
    assert service.state == Stop.DRAINING and executor.cancelled == []
    drop(path, "late.bin", b"late\n")
    settle(service, clock)
    assert list(executor.runs) == [run_id]  # nothing new is claimed while stopping
    service.loop(clock.advance(30))  # shutdown_timeout is over
    assert service.state == Stop.CANCELLING and executor.cancelled == [run_id]
    executor.finish(run_id, RunStatus.RELEASED)
    service.loop(clock.advance(0.01))
    assert service.state == Stop.STOPPED
    assert files(path) == ["late.bin", "long.bin"] and claimed_inputs(path) == []
    assert states(setup)[run_id] == "released"


def test_a_stop_whose_runs_never_answer_kills_the_executor_and_releases(daemon):
    service, clock, executor, setup, inbox = daemon
    path = Path(inbox["path"])
    drop(path, "stuck.bin", b"stuck\n")
    settle(service, clock)
    service._on_signal(signal.SIGTERM, None)
    service._on_signal(signal.SIGTERM, None)  # a second signal: cancel at once
    service.loop(clock.advance(0.01))
    assert service.state == Stop.CANCELLING
    service.loop(clock.advance(5 + 10 + 1))  # kill grace + the stuck margin
    assert service.state == Stop.STOPPED and executor.killed
    assert files(path) == ["stuck.bin"]


def test_reload_adds_an_inbox_and_keeps_the_run_in_flight(daemon):
    service, clock, executor, setup, inbox = daemon
    path = Path(inbox["path"])
    drop(path, "old.bin", b"old\n")
    settle(service, clock)
    [run_id] = executor.runs
    second = setup.inbox("second", watch="poll")
    Path(second["path"]).mkdir(exist_ok=True)
    setup.write()
    service._on_signal(signal.SIGHUP, None)
    service.loop(clock.advance(0.01))
    assert Path(second["path"]) in service.intake.watchers
    drop(Path(second["path"]), "new.bin", b"new\n")
    settle(service, clock)
    assert len(executor.runs) == 2 and run_id in executor.runs


def test_a_dead_daemons_claim_is_taken_over_and_run_under_its_run_id(daemon):
    service, clock, executor, setup, inbox = daemon
    path = Path(inbox["path"])
    dead = leases.Identity(leases.hostname(), leases.boot_id(), 2**22 + 7, "dead00").daemon_id
    claim = claims.claimed_root(path) / dead / "20261128T000000Z-abcdef"
    claim.mkdir(parents=True)
    (claim / "orphan.bin").write_bytes(b"orphan\n")
    claims.mark(claim, claims.RUNNING)
    service.loop(clock.advance(60))  # the next heartbeat judges the owners
    [(run_id, (spec, _))] = executor.runs.items()
    assert run_id == "20261128T000000Z-abcdef" and spec.input_name == "orphan.bin"
    assert claims.crashes(spec.claim) == 1 and spec.claim.parent.name == service.me.daemon_id
    assert not (claims.claimed_root(path) / dead).exists()
    # Whatever the dead daemon left running is swept: its run's processes, and all of its own.
    assert executor.swept == [f"CHUTE_RUN_ID={run_id}", f"CHUTE_OWNER={dead}"]


def test_the_loop_sleeps_until_its_next_due_time(daemon):
    service, clock, executor, setup, inbox = daemon
    service.loop(clock.advance(0.01))
    due = service.next_due() - clock.now
    assert 1.0 < due <= 5.0  # the next scan or heartbeat, not a 0.1 s tick


def test_a_stop_signal_ends_serve_and_the_signal_handlers_before_it_are_back(tmp_path):
    _, _, config = configured(tmp_path)
    before = {s: signal.getsignal(s) for s in SIGNALS}
    executor = FakeExecutor()
    service = Service(load_catalog(config), executor=executor)

    def stop_when_started() -> None:
        try:
            wait_until(lambda: signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM], 30)
        except AssertionError:
            service.signals.put(signal.SIGTERM)  # never installed: stop serve all the same (the test fails below)
            service.wake.set()
            raise
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, handled by the service's handler in this (main) thread

    sender = threading.Thread(target=stop_when_started)
    sender.start()
    try:
        service.serve()  # returns once the stop has drained (no run in flight) and every part is closed
    finally:
        sender.join()
    assert service.state == Stop.STOPPED and executor.closed
    assert {s: signal.getsignal(s) for s in SIGNALS} == before


class BrokenExecutor(FakeExecutor):
    """An executor whose close fails: a real one cannot be made to fail on demand (a Dask client's
    close raising needs a scheduler that breaks mid-close), so this one raises as it would."""

    def close(self) -> None:
        raise OSError(104, "Connection reset by peer")


def test_a_part_that_fails_to_stop_is_logged_and_every_other_part_still_stops(tmp_path):
    _, inbox, config = configured(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    service = Service(load_catalog(config), executor=BrokenExecutor())
    service.start()
    lease = leases.leases_dir(Path(inbox["path"])) / f"{service.me.daemon_id}.json"
    assert lease.exists() and service.intake.observer.is_alive()
    with structlog.testing.capture_logs() as logs:
        service.close()
    [failed] = [e for e in logs if e["event"] == "daemon.stop_failed"]
    assert failed["part"] == "executor" and "Connection reset by peer" in failed["reason"]
    # The parts before it and after it all ran: the lease is dropped, the inotify observer stopped,
    # the ledger closed, the signal handlers put back, and the stop logged.
    assert not lease.exists() and not service.intake.observer.is_alive()
    with pytest.raises(sqlite3.ProgrammingError):
        service.ledger.db.execute("SELECT 1")
    assert signal.getsignal(signal.SIGTERM) == before
    assert logs[-1]["event"] == "daemon.stopped"
