"""Schedule windows (contract §11): parsing, open at t, the next opening or closing; across midnight and DST."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from chute.schedule import is_open, next_change, next_open, parse, parse_all

BERLIN = ZoneInfo("Europe/Berlin")


def at(*args: int) -> datetime:
    """A Berlin wall-clock time (the first of a repeated hour)."""
    return datetime(*args, tzinfo=BERLIN)


def windows(*texts: str):
    return parse_all(texts)


def local(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(BERLIN).strftime("%a %Y-%m-%d %H:%M %Z")


def test_weekday_evenings_run_past_midnight_into_the_next_day():
    night = windows("Mon-Fri 20:00-06:00")
    assert not is_open(night, at(2026, 6, 1, 19, 59), BERLIN)  # a Monday
    assert is_open(night, at(2026, 6, 1, 20, 0), BERLIN)
    assert is_open(night, at(2026, 6, 2, 5, 59), BERLIN)
    assert not is_open(night, at(2026, 6, 2, 6, 0), BERLIN)
    # Friday's window covers Saturday's small hours; Saturday and Sunday evenings have none.
    assert is_open(night, at(2026, 6, 6, 3, 0), BERLIN)
    assert not is_open(night, at(2026, 6, 6, 21, 0), BERLIN)
    assert not is_open(night, at(2026, 6, 8, 3, 0), BERLIN)  # Monday 03:00: Sunday had no window
    assert local(next_open(night, at(2026, 6, 6, 12, 0), BERLIN)) == "Mon 2026-06-08 20:00 CEST"
    assert local(next_change(night, at(2026, 6, 5, 22, 0), BERLIN)) == "Sat 2026-06-06 06:00 CEST"


def test_weekends_all_day_and_every_day_windows():
    weekend = windows("Sat-Sun")
    assert not is_open(weekend, at(2026, 6, 5, 23, 59), BERLIN)
    assert is_open(weekend, at(2026, 6, 6, 0, 0), BERLIN)
    assert is_open(weekend, at(2026, 6, 7, 23, 59), BERLIN)
    assert local(next_change(weekend, at(2026, 6, 6, 9, 0), BERLIN)) == "Mon 2026-06-08 00:00 CEST"
    daily = windows("22:00-02:00")
    assert is_open(daily, at(2026, 6, 3, 1, 0), BERLIN)
    assert not is_open(daily, at(2026, 6, 3, 2, 0), BERLIN)
    assert local(next_open(daily, at(2026, 6, 3, 12, 0), BERLIN)) == "Wed 2026-06-03 22:00 CEST"


def test_lists_of_days_and_several_windows_that_touch_make_one_opening():
    w = windows("Mon,Wed 08:00-12:00", "Mon 12:00-14:00")
    assert is_open(w, at(2026, 6, 3, 9, 0), BERLIN)
    assert not is_open(w, at(2026, 6, 2, 9, 0), BERLIN)
    assert local(next_change(w, at(2026, 6, 1, 9, 0), BERLIN)) == "Mon 2026-06-01 14:00 CEST"
    assert next_change(windows("Mon-Sun"), at(2026, 6, 1, 9, 0), BERLIN) is None  # open all the time


def test_spring_forward_a_window_starting_in_the_skipped_hour_starts_when_the_gap_ends():
    # Berlin, Sunday 29 March 2026: 02:00 CET is followed by 03:00 CEST.
    w = windows("Sun 02:30-04:00")
    assert local(next_open(w, at(2026, 3, 29, 0, 0), BERLIN)) == "Sun 2026-03-29 03:00 CEST"
    assert not is_open(w, datetime(2026, 3, 29, 0, 59, tzinfo=UTC), BERLIN)  # 01:59 CET
    assert is_open(w, datetime(2026, 3, 29, 1, 0, tzinfo=UTC), BERLIN)  # 03:00 CEST
    assert not is_open(w, at(2026, 3, 29, 4, 0), BERLIN)
    # A night window across the change keeps its wall-clock times: an hour shorter.
    night = windows("Sat 22:00-06:00")
    span = next_change(night, at(2026, 3, 28, 23, 0), BERLIN)
    assert local(span) == "Sun 2026-03-29 06:00 CEST"


def test_fall_back_the_repeated_hour_is_inside_once_and_nothing_is_lost():
    # Berlin, Sunday 25 October 2026: 03:00 CEST is followed by 02:00 CET again.
    w = windows("Sun 01:00-02:30")
    first_0215 = datetime(2026, 10, 25, 0, 15, tzinfo=UTC)  # 02:15 CEST
    second_0215 = datetime(2026, 10, 25, 1, 15, tzinfo=UTC)  # 02:15 CET
    assert is_open(w, first_0215, BERLIN)
    # A time in the repeated hour is its first occurrence: the window ends once, and does not open again.
    assert not is_open(w, second_0215, BERLIN)
    assert local(next_change(w, first_0215, BERLIN)) == "Sun 2026-10-25 02:30 CEST"
    assert local(next_open(w, second_0215, BERLIN)) == "Sun 2026-11-01 01:00 CET"
    # A window starting in the repeated hour opens once, at its first occurrence, and runs through the second.
    late = windows("Sun 02:15-04:00")
    assert local(next_open(late, at(2026, 10, 25, 1, 0), BERLIN)) == "Sun 2026-10-25 02:15 CEST"
    assert is_open(late, second_0215, BERLIN)
    assert local(next_change(late, first_0215, BERLIN)) == "Sun 2026-10-25 04:00 CET"
    night = windows("Sat 22:00-06:00")
    assert local(next_change(night, at(2026, 10, 24, 23, 0), BERLIN)) == "Sun 2026-10-25 06:00 CET"
    assert local(next_open(night, at(2026, 10, 25, 7, 0), BERLIN)) == "Sat 2026-10-31 22:00 CET"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is empty"),
        ("Mon-Fry 20:00-06:00", "'Fry' is not a day"),
        ("Mon 25:00-06:00", "'25:00' is not a time"),
        ("Mon 20:00", "is not a time range"),
        ("Mon 20:00-6", "'6' is not a time"),
        ("20:00-06:00 Mon", "is not DAYS followed by"),
        ("Mon Tue 20:00-06:00", "is not DAYS, HH:MM-HH:MM, or both"),
        ("24:00-06:00", "is not a start time"),
    ],
)
def test_what_is_wrong_with_a_window_is_said(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse(text)


def test_days_wrap_and_spaces_around_commas_and_dashes_are_allowed():
    assert parse("Sat-Mon").days == {5, 6, 0}
    assert parse("Mon, Wed 08:00 - 12:00") == parse("Mon,Wed 08:00-12:00")
    assert parse("monday").days == {0}
    assert parse("20:00-20:00").length == 24 * 60
