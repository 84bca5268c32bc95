"""What the page does, all through the daemon's control socket: pause and resume an inbox, retry runs.

The web process never moves a file: `retry` is the daemon's (control.py), with `chute retry`'s answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..config import Config
from ..errors import ChuteError
from . import history, live, query
from .site import form, site

CHUNK = 1000  # run ids in one control request (its line is at most 64 KiB)
MAX_BULK = 10_000  # runs one bulk retry may name


@dataclass(frozen=True)
class Retried:
    """What a retry did: how many went back, and a line for each that did not."""

    retried: int
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"retried": self.retried, "problems": self.problems}


def retry(config: Config, run_ids: list[str]) -> Retried:
    """Ask the daemon to put these runs' inputs back; ChuteError when no daemon answers."""
    done, problems = 0, []
    for start in range(0, len(run_ids), CHUNK):
        answer = live.act(config.state_dir, {"op": "retry", "runs": run_ids[start : start + CHUNK]})
        for row in answer.get("results", []):
            done += bool(row.get("ok"))
            if not row.get("ok"):
                problems.append(str(row.get("message")))
    return Retried(done, problems)


def matching(config: Config, asked: query.Asked) -> list[str]:
    """The failed runs a filter shows (all of them, up to MAX_BULK), for "retry all matching"."""
    page = history.runs(config.state_dir, query.failed_only(asked).filter, MAX_BULK, budget=2.0)
    return [r.run_id for r in page.runs]


def pause(config: Config, op: str, inbox: str) -> dict[str, Any]:
    """Pause or resume one configured inbox (HTTPException 404 for anything else)."""
    if op not in ("pause", "resume"):
        raise HTTPException(404, "no such action")
    if inbox not in {str(i.path) for i in config.inboxes}:
        raise HTTPException(404, f"no inbox {inbox!r} in the config")
    return live.act(config.state_dir, {"op": op, "inboxes": [inbox]})


async def pause_form(request: Request) -> Response:
    fields = await form(request)
    op = request.path_params["op"]
    inbox = (fields.get("inbox") or [""])[0]
    try:
        await run_in_threadpool(pause, site(request).config, op, inbox)
    except ChuteError as exc:
        raise HTTPException(503, str(exc)) from None
    return RedirectResponse("/", 303)


async def retry_form(request: Request) -> Response:
    """Retry the ticked runs (`run`), or every failed run of the filter (`all`, confirmed with its `count`)."""
    fields = await form(request)
    config = site(request).config
    ids = fields.get("run", [])
    if fields.get("all"):
        asked = query.parse({k: v[0] for k, v in fields.items() if k in query.KEYS})
        ids = await run_in_threadpool(matching, config, asked)
        confirmed = (fields.get("count") or [""])[0]
        if confirmed != str(len(ids)):
            # What the page confirmed is no longer what matches: ask again with the new count.
            raise HTTPException(409, f"{len(ids)} runs match now, not {confirmed}: reload the page and confirm again")
    try:
        done = await run_in_threadpool(retry, config, ids)
    except ChuteError as exc:
        raise HTTPException(503, str(exc)) from None
    back = fields.get("back", ["/failures"])[0]
    context = {"done": done, "back": back if back.startswith("/") and not back.startswith("//") else "/failures"}
    return site(request).page(request, "retried.html", context)


ROUTES = [
    Route("/inboxes/{op:str}", pause_form, methods=["POST"]),
    Route("/failures/retry", retry_form, methods=["POST"]),
]
