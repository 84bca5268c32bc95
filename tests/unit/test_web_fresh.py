"""The live fragment's shared value: worked out once per interval however many pages ask."""

import threading

from chute.web.fresh import Fresh


def test_a_value_is_reused_until_it_is_older_than_its_max_age():
    now = [100.0]
    fresh = Fresh(1.0, clock=lambda: now[0])
    made = []

    def work():
        made.append(now[0])
        return len(made)

    assert [fresh.get("a", work) for _ in range(50)] == [1] * 50
    now[0] += 1.0
    assert fresh.get("a", work) == 1
    now[0] += 0.5
    assert fresh.get("a", work) == 2 and fresh.get("b", work) == 3  # each key its own value
    assert made == [100.0, 101.5, 101.5]
    fresh.forget("a")  # a pause or resume: the next page must not show the state before it
    assert fresh.get("a", work) == 4 and fresh.get("b", work) == 3


def test_requests_at_once_wait_for_one_working_it_out():
    fresh = Fresh(10.0)
    started, release = threading.Event(), threading.Event()
    calls = []

    def work():
        calls.append(1)
        started.set()
        release.wait(10)
        return "status"

    got = []
    threads = [threading.Thread(target=lambda: got.append(fresh.get("k", work))) for _ in range(8)]
    threads[0].start()
    started.wait(10)
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(10)
    assert got == ["status"] * 8 and calls == [1]
