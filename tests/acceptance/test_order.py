"""Priorities, order and schedule windows (contract §11; issue 21), proven from the ledger's start order.

A real daemon with one worker on real folders: the backlogs are in the inboxes
before it starts, so every file is settled at the same look and the order of
the claims is the daemon's choice alone.
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

from chute.schedule import DAYS, local_zone

from tests.harness import CHUTE, Daemon, Setup, drop, files, ledger_runs, wait_until


def backlog(inbox: dict, names: list[str], data: bytes = b"x\n") -> None:
    Path(inbox["path"]).mkdir(parents=True, exist_ok=True)
    for name in names:
        drop(Path(inbox["path"]), name, data)


def started(config: Path) -> list[tuple[str, str]]:
    """(inbox folder name, input name) of every run, in the order the runs started."""
    runs = sorted((r for r in ledger_runs(config) if r.started_at), key=lambda r: r.started_at)
    return [(Path(r.inbox).name, r.input_name) for r in runs]


def drained(config: Path, count: int):
    return lambda: sum(1 for r in ledger_runs(config) if r.state.value == "succeeded") >= count


def test_a_higher_priority_inbox_is_claimed_before_a_lower_one_with_one_worker(tmp_path):
    setup = Setup(tmp_path, workers=1)
    low = setup.inbox("low")
    high = setup.inbox("high", priority=10)
    backlog(low, [f"l{i}.bin" for i in range(5)])
    backlog(high, [f"h{i}.bin" for i in range(5)])
    config = setup.write()
    with Daemon(config) as d:
        wait_until(drained(config, 10), 120)
        assert d.stop() == 0
    order = [inbox for inbox, _ in started(config)]
    assert order == ["high"] * 5 + ["low"] * 5


def test_equal_priorities_take_turns(tmp_path):
    setup = Setup(tmp_path, workers=1)
    a = setup.inbox("a")
    b = setup.inbox("b")
    backlog(a, [f"a{i}.bin" for i in range(6)])
    backlog(b, [f"b{i}.bin" for i in range(6)])
    config = setup.write()
    with Daemon(config) as d:
        wait_until(drained(config, 12), 120)
        assert d.stop() == 0
    order = [inbox for inbox, _ in started(config)]
    assert sorted(order) == ["a"] * 6 + ["b"] * 6
    assert all(x != y for x, y in zip(order, order[1:])), order  # never two in a row from one inbox


def test_order_largest_and_newest_decide_which_file_goes_first(tmp_path):
    setup = Setup(tmp_path, workers=1)
    big = setup.inbox("big", order="largest")
    new = setup.inbox("new", order="newest", priority=-1)  # after `big`: each inbox's order is seen alone
    sizes = {"s.bin": 10, "m.bin": 2000, "l.bin": 50000, "xs.bin": 1, "xl.bin": 90000}
    for name, size in sizes.items():
        backlog(big, [name], b"y" * size)
    ages = {"first.bin": 400, "second.bin": 300, "third.bin": 200, "fourth.bin": 100}
    backlog(new, list(ages))
    now = datetime.now().timestamp()
    for name, age in ages.items():
        os.utime(Path(new["path"]) / name, (now - age, now - age))
    config = setup.write()
    with Daemon(config) as d:
        wait_until(drained(config, 9), 120)
        assert d.stop() == 0
    order = started(config)
    assert [n for inbox, n in order if inbox == "big"] == sorted(sizes, key=lambda n: -sizes[n])
    assert [n for inbox, n in order if inbox == "new"] == ["fourth.bin", "third.bin", "second.bin", "first.bin"]


def weekdays(*offsets: int) -> str:
    """Days counted from today (local time), as a schedule names them: "Mon,Tue"."""
    today = datetime.now(local_zone()).date()
    return ",".join(DAYS[(today + timedelta(days=o)).weekday()] for o in offsets)


def test_an_inbox_outside_its_schedule_claims_nothing_while_one_inside_claims(tmp_path):
    prom = tmp_path / "chute.prom"
    setup = Setup(tmp_path, workers=1, metrics={"textfile": str(prom)})
    # All day on a day two or three days away: closed now whatever the time of day.
    closed = setup.inbox("closed", schedule=[weekdays(3)], priority=10)
    # All day yesterday, today and tomorrow, in two windows: open now.
    opened = setup.inbox("opened", schedule=[weekdays(-1, 0), weekdays(1)])
    backlog(closed, ["c0.bin", "c1.bin"])
    backlog(opened, ["o0.bin", "o1.bin"])
    config = setup.write()
    with Daemon(config) as d:
        wait_until(drained(config, 2), 120)
        drop(Path(closed["path"]), "c2.bin", b"dropped while closed\n")
        drop(Path(opened["path"]), "o2.bin", b"dropped while open\n")
        wait_until(drained(config, 3), 120)
        [ev] = d.events("inbox.schedule_closed")
        assert ev["inbox"] == closed["path"] and "T00:00" in ev["opens"]
        wait_until(lambda: prom.exists() and "chute_inbox_in_schedule" in prom.read_text(), 30)
        text = prom.read_text()
        assert f'chute_inbox_in_schedule{{inbox="{closed["path"]}"}} 0.0' in text
        assert f'chute_inbox_in_schedule{{inbox="{opened["path"]}"}} 1.0' in text
        status = subprocess.run(
            [str(CHUTE), "status", "--config", str(config)], capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0, status
        day = weekdays(3)
        assert f"outside its schedule until {day} 00:00: {closed['path']}" in status.stdout
        assert f"inside its schedule until {weekdays(2)} 00:00: {opened['path']}" in status.stdout
        assert d.stop() == 0
    assert {r.input_name for r in ledger_runs(config)} == {"o0.bin", "o1.bin", "o2.bin"}
    assert files(Path(closed["path"])) == ["c0.bin", "c1.bin", "c2.bin"]  # waiting in the inbox, untouched


def test_chute_check_names_each_bad_schedule_window_order_and_priority_at_its_line(tmp_path):
    setup = Setup(tmp_path)
    setup.inbox("a", order="biggest", schedule=["Mon-Fri 20:00-06:00", "Mon-Fry 20:00-06:00", "25:00-01:00"])
    setup.inbox("b", schedule=[])
    config = setup.write()
    lines = config.read_text().splitlines()

    def line_of(text: str) -> int:
        return next(i for i, line in enumerate(lines, 1) if text in line)

    check = subprocess.run([str(CHUTE), "check", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 1, check
    out = check.stdout + check.stderr
    assert f"chute.yaml:{line_of('biggest')}: inboxes[0].order: Input should be 'oldest'" in out
    assert f"chute.yaml:{line_of('Mon-Fry')}: inboxes[0].schedule[1]: 'Fry' is not a day" in out
    assert f"chute.yaml:{line_of('25:00-01:00')}: inboxes[0].schedule[2]: '25:00' is not a time" in out
    assert f"chute.yaml:{line_of('schedule: []')}: inboxes[1].schedule: is empty" in out
