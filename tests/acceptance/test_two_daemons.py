"""Two daemons on one inbox: every file exactly once, and a frozen daemon's claims taken over (contract §5).

Two `chute run` processes with state folders of their own watch the same inbox,
as two hosts would on a share. Claims and take-overs are renames, so one of
them wins each; the loser learns it from a failed rename, never from a clock.
The harness config's lease_timeout is 3 s.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.harness import Daemon, Setup, assert_processed_once, claimed_inputs, drop, files, ledger_runs, wait_until

LEASE_TIMEOUT = 3.0  # tests/harness.py's Setup default


def two_daemons(tmp_path: Path) -> tuple[Setup, dict, Daemon, Daemon]:
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    Path(inbox["path"]).mkdir(exist_ok=True)
    a = Daemon(setup.write("a"))
    b = Daemon(setup.write("b"))
    return setup, inbox, a, b


def all_done(inbox: dict, n: int):
    return lambda: len(files(inbox["archive"])) >= n and not claimed_inputs(Path(inbox["path"]))


def test_two_daemons_on_one_inbox_process_200_files_each_exactly_once(tmp_path):
    _, inbox, a, b = two_daemons(tmp_path)
    inputs = {f"f{i:03d}.bin": f"file {i}\n".encode() for i in range(200)}
    with a, b:
        for name, data in inputs.items():
            drop(Path(inbox["path"]), name, data)
        wait_until(all_done(inbox, 200), 120)
        assert a.stop() == 0 and b.stop() == 0
    runs = ledger_runs(a.config) + ledger_runs(b.config)
    succeeded = [r for r in runs if r.state.value == "succeeded"]
    assert len(succeeded) == 200
    assert sorted(r.input_name for r in succeeded) == sorted(inputs)
    assert len({r.run_id for r in runs}) == len(runs), "a run id in both ledgers"
    by_a = sum(r.state.value == "succeeded" for r in ledger_runs(a.config))
    assert 0 < by_a < 200, f"one daemon did all the work ({by_a} by a)"
    print(
        f"\ntwo daemons: 200 files, {by_a} by a, {200 - by_a} by b, "
        f"{len(a.events('file.taken_elsewhere')) + len(b.events('file.taken_elsewhere'))} claims lost to the other"
    )
    assert_processed_once(inbox, inputs)


def test_a_frozen_daemons_runs_are_taken_over_and_still_processed_exactly_once(tmp_path):
    _, inbox, a, b = two_daemons(tmp_path)
    b.env["CHUTE_TEST_SLEEP_MAX"] = "0.5"  # b re-runs what it takes over quickly
    path = Path(inbox["path"])
    with a:
        # Only a is up when the long files arrive, so it holds runs when it freezes. Its pool
        # workers are not frozen with it: the runs must outlast b's start plus lease_timeout,
        # or they are published before anything is left to take over.
        inputs = {f"slow-{i}.bin": f"sleep=8\nslow {i}\n".encode() for i in range(4)}
        for name, data in inputs.items():
            drop(path, name, data)
        a.wait_event("entry.started", count=2)
        with b:
            a.signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            taken = b.wait_event("run.taken_over", timeout=LEASE_TIMEOUT + 10)
            assert time.monotonic() - frozen_at >= LEASE_TIMEOUT - 1  # not before the lease went stale
            owner = taken[0]["owner"]
            assert owner.split(".")[1] == str(a.pid)
            time.sleep(1)  # the scenario: still frozen a while after the take-over
            a.signal(signal.SIGCONT)
            more = {f"after-{i}.bin": f"after {i}\n".encode() for i in range(6)}
            for name, data in more.items():
                drop(path, name, data)
            inputs.update(more)
            wait_until(all_done(inbox, len(inputs)), 60)
            assert a.stop() == 0 and b.stop() == 0
    taken_ids = {ev["run_id"] for ev in b.events("run.taken_over")}
    discarded = {ev["run_id"] for ev in a.events("run.discarded")}
    assert discarded <= taken_ids, "a discarded a run nobody took over"
    published = a.events("run.published") + b.events("run.published")
    assert len(published) == len(inputs), "a run published twice"
    runs = ledger_runs(a.config) + ledger_runs(b.config)
    assert sum(r.state.value == "succeeded" for r in runs) == len(inputs)
    assert all(r.state.value in ("succeeded", "discarded") for r in runs), [
        (r.run_id, r.state.value, r.error) for r in runs if r.state.value not in ("succeeded", "discarded")
    ]
    print(
        f"\nfrozen daemon: {len(inputs)} files, {len(taken_ids)} runs taken over, "
        f"{len(discarded)} discarded by the frozen daemon"
    )
    assert_processed_once(inbox, inputs)


def test_a_daemon_draining_on_sigterm_keeps_its_lease_and_its_runs(tmp_path):
    setup = Setup(tmp_path, shutdown_timeout=LEASE_TIMEOUT * 3)
    inbox = setup.inbox()
    path = Path(inbox["path"])
    path.mkdir(exist_ok=True)
    a, b = Daemon(setup.write("a")), Daemon(setup.write("b"))
    inputs = {f"drain-{i}.bin": f"sleep=2.5\ndrain {i}\n".encode() for i in range(2)}
    with a:
        for name, data in inputs.items():
            drop(path, name, data)
        a.wait_event("entry.started", count=2)
        with b:
            a.signal(signal.SIGTERM)  # a drains its runs (5 s) for longer than lease_timeout
            assert a.proc.wait(LEASE_TIMEOUT * 3 + 5) == 0
            assert b.events("run.taken_over") == [], "a live daemon's claims were taken while it drained"
            assert sorted(ev["file"] for ev in a.events("run.published")) == sorted(inputs)
            assert b.stop() == 0
    assert_processed_once(inbox, inputs)
