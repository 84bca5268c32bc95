"""How often a daemon rewrites its leases: often enough for its peers, not at every beat (issue 21)."""

from __future__ import annotations

import json
import threading

import pytest
from chute.leases import Identity, LeaseClock, drop_lease, leases_dir, read_lease, write_lease
from chute.recovery import Recovery

LEASE_TIMEOUT = 120.0


def test_an_idle_lease_is_rewritten_each_quarter_of_lease_timeout_and_a_peer_never_finds_it_stale(tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    me = Identity.mine()
    recovery = Recovery(me, LEASE_TIMEOUT)
    peer = LeaseClock(LEASE_TIMEOUT)  # another daemon judging our lease on its own clock
    counters, stale = [], []
    recovery.heartbeat(0.0, {inbox}, {}, force=True)
    now = 0.0
    while now < 10 * LEASE_TIMEOUT:
        now += recovery.interval
        recovery.heartbeat(now, {inbox}, {})
        lease = read_lease(inbox, me.daemon_id)
        assert lease is not None
        counters.append(lease["counter"])
        stale.append(peer.stale(inbox, me.daemon_id, lease, now))
    assert not any(stale)
    beats, writes = len(counters), len(set(counters))
    assert writes <= beats // 4, (beats, writes)  # 500 inboxes were 6,000 lease files written a minute
    assert writes >= 10 * 4  # at least each quarter of lease_timeout


def test_a_lease_makes_its_folders_when_missing_but_never_the_inbox(tmp_path):
    inbox, me = tmp_path / "in", Identity.mine()
    with pytest.raises(FileNotFoundError):  # a vanished share stays absent: its scan reports it unavailable
        write_lease(inbox, me, 1)
    assert not inbox.exists()
    inbox.mkdir()
    write_lease(inbox, me, 1)
    write_lease(inbox, me, 2)
    assert read_lease(inbox, me.daemon_id) == me.record(counter=2)
    assert [p.name for p in leases_dir(inbox).iterdir()] == [f"{me.daemon_id}.json"]  # no temporary left


def test_a_lease_is_rewritten_in_place_and_made_whole_again_when_lost_or_damaged(tmp_path):
    inbox, me = tmp_path / "in", Identity.mine()
    inbox.mkdir()
    lease = leases_dir(inbox) / f"{me.daemon_id}.json"
    write_lease(inbox, me, 1)
    first = lease.stat()
    write_lease(inbox, me, 10**12)
    # One open and write of the same file: a new file renamed over it each time cost ten times the CPU (issue 21).
    assert (lease.stat().st_ino, lease.stat().st_size) == (first.st_ino, first.st_size)
    assert read_lease(inbox, me.daemon_id) == me.record(counter=10**12)

    lease.write_bytes(lease.read_bytes()[:-7])  # half of a rewrite, as a crash in the middle may leave it
    write_lease(inbox, me, 3)
    assert read_lease(inbox, me.daemon_id) == me.record(counter=3)
    drop_lease(inbox, me.daemon_id)  # as a peer that took this daemon for dead does
    write_lease(inbox, me, 4)
    assert read_lease(inbox, me.daemon_id) == me.record(counter=4)
    assert [p.name for p in leases_dir(inbox).iterdir()] == [lease.name]


def test_a_peer_reading_a_lease_while_it_is_rewritten_always_finds_it_and_never_another_daemon_in_it(tmp_path):
    inbox, me = tmp_path / "in", Identity.mine()
    inbox.mkdir()
    write_lease(inbox, me, 0)
    done, seen = threading.Event(), []

    def peer() -> None:
        lease = leases_dir(inbox) / f"{me.daemon_id}.json"
        while not done.is_set():
            text = lease.read_text()  # FileNotFoundError here: the lease was missing for a moment
            try:
                seen.append(json.loads(text))
            except ValueError:
                seen.append(None)  # caught half-written: a change, as any rewrite is (LeaseClock)

    reader = threading.Thread(target=peer)
    reader.start()
    try:
        for counter in range(1, 3000):
            write_lease(inbox, me, counter)
    finally:
        done.set()
        reader.join()
    identity = me.record()
    assert seen and all(s is None or {k: s[k] for k in identity} == identity for s in seen)
    assert read_lease(inbox, me.daemon_id) == me.record(counter=2999)
