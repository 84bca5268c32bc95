"""An inbox's schedule windows (contract §11): parsed once, then "is it open at t", "when does it next change".

A window is written `[DAYS] [HH:MM-HH:MM]`: `"Mon-Fri 20:00-06:00"`, `"Sat-Sun"` (all day),
`"Mon,Wed 08:00-12:00"`, `"22:00-02:00"` (every day). Days name the day a window starts: a
window whose end is not after its start runs past midnight, and that part belongs to the day
before ("Fri 20:00-06:00" covers Saturday 00:00-06:00). Times are local wall-clock times in
`zone`: everything is computed with aware datetimes, so a window keeps its wall-clock times
across DST changes. A start in the hour skipped by spring-forward starts at the first instant
after the gap; a time in the hour repeated by fall-back is its first occurrence, so a window opens
and closes once and nothing is claimed twice or skipped.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_TIME = re.compile(r"([01]?[0-9]|2[0-4]):([0-5][0-9])")
# Far enough ahead that a window that opens once a week is found across any DST change.
HORIZON_DAYS = 9


@dataclass(frozen=True)
class Window:
    """One window: the weekdays it starts on (0 = Monday) and its wall-clock start and length in minutes."""

    days: frozenset[int]
    start: int  # minutes after midnight
    length: int  # minutes; up to 24 h

    def spans(self, day: date, zone: tzinfo) -> tuple[datetime, datetime] | None:
        """The instants (UTC) this window covers when it starts on `day`, or None if it does not start then."""
        if day.weekday() not in self.days:
            return None
        start = _local(day, self.start, zone)
        end = _local(day, self.start + self.length, zone)
        return start, end


def parse(text: str) -> Window:
    """One window from its text; ValueError saying what is wrong."""
    words = re.sub(r"\s*([,-])\s*", r"\1", text).split()  # "Mon, Wed 08:00 - 12:00" reads as it is meant
    if not words:
        raise ValueError("is empty: write days and/or a time range, such as 'Mon-Fri 20:00-06:00' or 'Sat-Sun'")
    if len(words) > 2:
        raise ValueError(f"{text!r} is not DAYS, HH:MM-HH:MM, or both (such as 'Mon-Fri 20:00-06:00')")
    times = words[-1] if ":" in words[-1] else None
    days_text = words[0] if (times is None or len(words) == 2) else None
    if len(words) == 2 and (times is None or ":" in words[0]):
        raise ValueError(f"{text!r} is not DAYS followed by HH:MM-HH:MM (such as 'Mon-Fri 20:00-06:00')")
    days = _days(days_text) if days_text is not None else frozenset(range(7))
    start, length = _times(times) if times is not None else (0, 24 * 60)
    return Window(days, start, length)


@functools.cache
def parse_all(texts: tuple[str, ...]) -> tuple[Window, ...]:
    """Every window of a schedule (cached: the loop asks for an inbox's windows at every look)."""
    return tuple(parse(t) for t in texts)


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        a, b = _day(first), _day(last) if last else _day(first)
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))  # "Sat-Mon" wraps to Monday
    return frozenset(days)


def _day(word: str) -> int:
    for i, name in enumerate(DAYS):
        if word.lower() in (name.lower(), _long(name).lower()):
            return i
    raise ValueError(f"{word!r} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun; a range Mon-Fri; a list Mon,Wed)")


def _long(name: str) -> str:
    return {"Mon": "Monday", "Tue": "Tuesday", "Wed": "Wednesday", "Thu": "Thursday"}.get(
        name, {"Fri": "Friday", "Sat": "Saturday", "Sun": "Sunday"}.get(name, name)
    )


def _times(text: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    if not sep:
        raise ValueError(f"{text!r} is not a time range HH:MM-HH:MM (such as 20:00-06:00)")
    start, end = _minutes(first), _minutes(last)
    if start == 24 * 60:
        raise ValueError(f"{first!r} is not a start time (00:00 to 23:59)")
    length = (end - start) % (24 * 60) or 24 * 60  # not after its start: it runs past midnight
    return start, length


def _minutes(text: str) -> int:
    m = _TIME.fullmatch(text)
    if m is None or (int(m[1]) == 24 and m[2] != "00"):
        raise ValueError(f"{text!r} is not a time HH:MM (00:00 to 24:00)")
    return int(m[1]) * 60 + int(m[2])


def _local(day: date, minutes: int, zone: tzinfo) -> datetime:
    """The instant (UTC) of a wall-clock time `minutes` after `day`'s midnight; in a DST gap, the gap's end."""
    day = day + timedelta(days=minutes // (24 * 60))
    minutes %= 24 * 60
    naive = datetime.combine(day, time(minutes // 60, minutes % 60))
    instant = naive.replace(tzinfo=zone).astimezone(UTC)  # fold=0: the first of a repeated hour
    if _wall(instant, zone) == naive:
        return instant
    # Skipped by spring-forward: the first instant whose wall-clock time is not before it (the gap's end).
    lo, hi = naive.replace(tzinfo=zone, fold=1).astimezone(UTC), instant
    lo, hi = min(lo, hi), max(lo, hi)
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if _wall(mid, zone) >= naive:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0)


def _wall(instant: datetime, zone: tzinfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _openings(windows: tuple[Window, ...], at: datetime, zone: tzinfo, ahead: int) -> list[tuple[datetime, datetime]]:
    """The windows' spans from the day before `at` to `ahead` days after, merged where they touch or overlap."""
    today = at.astimezone(zone).date()
    spans = sorted(
        span
        for d in range(-1, ahead + 1)  # from yesterday: a window across midnight covers the small hours
        for w in windows
        if (span := w.spans(today + timedelta(days=d), zone)) is not None and span[1] > span[0]
    )
    merged: list[tuple[datetime, datetime]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def is_open(windows: tuple[Window, ...], at: datetime, zone: tzinfo) -> bool:
    """Whether the aware instant `at` is inside one of the windows."""
    return any(s <= at < e for s, e in _openings(windows, at, zone, 0))


def next_change(windows: tuple[Window, ...], at: datetime, zone: tzinfo) -> datetime | None:
    """The next instant (UTC) after `at` at which the schedule opens or closes; None if it never does."""
    for s, e in _openings(windows, at, zone, HORIZON_DAYS):
        if s <= at < e:
            # Open for more than a week from now: open all the time (every day, all day).
            return None if e - at > timedelta(days=8) else e
        if s > at:
            return s
    return None


def next_open(windows: tuple[Window, ...], at: datetime, zone: tzinfo) -> datetime | None:
    """When the schedule next opens after `at` (None if it is open now or never opens)."""
    if is_open(windows, at, zone):
        return None
    return next_change(windows, at, zone)


def local_zone() -> tzinfo:
    """The zone wall-clock times are read in: $TZ when it names a zone, else the system's /etc/localtime."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return UTC
