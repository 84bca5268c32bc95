"""Which settled file is claimed first (contract §11): an inbox's `order`, and priorities and turns across inboxes."""

from __future__ import annotations

from chute.ordering import File, interleave, key

FILES = [
    File("b.mov", size=300, mtime_ns=2, changed_at=1.0),
    File("a.mov", size=100, mtime_ns=3, changed_at=1.0),
    File("c.mov", size=200, mtime_ns=1, changed_at=1.0),
]


def names(order: str) -> list[str]:
    return [f.name for f in sorted(FILES, key=key(order))]


def test_each_order_of_an_inbox():
    assert names("oldest") == ["c.mov", "b.mov", "a.mov"]
    assert names("newest") == ["a.mov", "b.mov", "c.mov"]
    assert names("name") == ["a.mov", "b.mov", "c.mov"]
    assert names("smallest") == ["a.mov", "c.mov", "b.mov"]
    assert names("largest") == ["b.mov", "c.mov", "a.mov"]


def test_ties_go_to_the_file_seen_changing_first_then_by_name():
    same = [File("z", 1, 5, changed_at=2.0), File("y", 1, 5, changed_at=1.0), File("x", 1, 5, changed_at=2.0)]
    assert [f.name for f in sorted(same, key=key("oldest"))] == ["y", "x", "z"]


def test_a_higher_priority_comes_first_whatever_its_backlog():
    got = interleave([("low", 0, ["l1", "l2"]), ("high", 5, ["h1", "h2", "h3"])], {})
    assert got == ["h1", "h2", "h3", "l1", "l2"]


def test_equal_priorities_take_turns_and_the_one_served_longest_ago_goes_first():
    groups = [("a", 0, ["a1", "a2", "a3"]), ("b", 0, ["b1", "b2"])]
    assert interleave(groups, {}) == ["a1", "b1", "a2", "b2", "a3"]
    assert interleave(groups, {"a": 7, "b": 6}) == ["b1", "a1", "b2", "a2", "a3"]


def test_one_claim_at_a_time_never_starves_an_inbox():
    backlog = {"a": [f"a{i}" for i in range(4)], "b": [f"b{i}" for i in range(4)], "c": ["c0"]}
    served: dict[str, int] = {}
    claimed = []
    for n in range(9):  # one free worker at each look
        first = interleave([(k, 0, v) for k, v in backlog.items() if v], served)[0]
        inbox = first[0]
        backlog[inbox].remove(first)
        served[inbox] = n
        claimed.append(first)
    assert claimed[:3] == ["a0", "b0", "c0"]
    assert claimed[3:] == ["a1", "b1", "a2", "b2", "a3", "b3"]
