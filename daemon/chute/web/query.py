"""A history's filter as a URL's query says it (`state=&job=&inbox=&q=&since=&until=&limit=&offset=`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from starlette.exceptions import HTTPException

from ..ledger import State
from .history import MAX_LIMIT, Filter

KEYS = ("state", "job", "inbox", "q", "since", "until")


@dataclass(frozen=True)
class Asked:
    """A parsed query: the filter, the page (limit None: the page's own size) and the raw values to show."""

    filter: Filter
    limit: int | None
    offset: int
    raw: dict[str, str]

    def url(self, path: str, **change: object) -> str:
        """`path` with this query, some values changed (None drops one): for pages, exports and links."""
        values: dict[str, object] = dict(self.raw)
        if self.limit is not None:
            values["limit"] = self.limit
        values |= change
        kept = {k: v for k, v in values.items() if v not in (None, "") and not (k == "offset" and not v)}
        return f"{path}?{urlencode(kept)}" if kept else path

    def next_offset(self, shown: int, page: int) -> int | None:
        return self.offset + page if shown >= page else None


def parse(params: Mapping[str, str], state: str | None = None) -> Asked:
    """The filter of a query string; HTTPException 400 for a value that means nothing."""
    raw = {k: params[k].strip() for k in KEYS if params.get(k, "").strip()}
    if state is not None:
        raw.setdefault("state", state)
    try:
        chosen = State(raw["state"]) if "state" in raw else None
    except ValueError:
        raise HTTPException(400, f"state must be one of {', '.join(s.value for s in State)}") from None
    where = Filter(
        state=chosen,
        job=raw.get("job"),
        inbox=raw.get("inbox"),
        q=raw.get("q"),
        since=_time(raw, "since"),
        until=_time(raw, "until", end_of_day=True),
    )
    limit = _number(params, "limit", 1, MAX_LIMIT)
    return Asked(where, limit, _number(params, "offset", 0, 10**9) or 0, raw)


def _number(params: Mapping[str, str], key: str, low: int, high: int) -> int | None:
    text = params.get(key, "").strip()
    if not text:
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        raise HTTPException(400, f"{key} must be a whole number from {low} to {high}")
    return int(text)


def _time(raw: dict[str, str], key: str, end_of_day: bool = False) -> str | None:
    """A date (2026-12-01, local midnight; `until` takes the whole day) or an ISO time, as the ledger writes times."""
    text = raw.get(key)
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            at = datetime(day.year, day.month, day.day).astimezone()
            if end_of_day:
                at += timedelta(days=1)
        else:
            at = datetime.fromisoformat(text.replace("Z", "+00:00"))
            at = at if at.tzinfo else at.astimezone()
    except ValueError:
        raise HTTPException(400, f"{key} must be a date (2026-12-01) or an ISO time") from None
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failed_only(asked: Asked) -> Asked:
    """The same filter, narrowed to failed runs (what a bulk retry may act on)."""
    return replace(asked, filter=replace(asked.filter, state=State.FAILED))
