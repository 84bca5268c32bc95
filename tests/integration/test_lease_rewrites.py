"""How often a daemon rewrites its leases: often enough for its peers, not at every beat (issue 21)."""

from __future__ import annotations

import pytest
from chute.leases import Identity, LeaseClock, leases_dir, read_lease, write_lease
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
