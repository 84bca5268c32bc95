"""The JSON API (contract §13; docs/web.md, and /api/openapi.json for its shape)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import ChuteError
from ..ledger import Run
from ..names import fields, strict
from . import actions, history, live, query
from .site import HERE, json_body, site

MAX_DOCUMENT = 4 << 20  # bytes of a manifest.json or report.json the API passes on
EXPORT_BUDGET_S = 2.0  # an export of a filter that matches only old runs stops here (X-Chute-Complete: false)
CSV_COLUMNS = (
    *("run_id", "state", "job", "inbox", "input_name", "size", "queued_at", "started_at", "finished_at"),
    *("worker", "reason", "result"),
)


def run_json(run: Run) -> dict[str, Any]:
    """A ledger row in strict UTF-8 (with `<key>_b64` for a name or path that is not UTF-8), and its reason."""
    row = run.as_dict()
    for key in ("inbox", "input_name", "claim", "result"):
        if row[key] is not None:
            row.update(fields(key, row[key]))
    return strict(row | {"reason": (run.error or {}).get("reason")})


def inboxes(request: Request) -> Response:
    config = site(request).config
    answer = live.status(config.state_dir)
    document = {
        "daemon": {"up": answer is not None, "state": (answer or {}).get("state"), "pid": (answer or {}).get("pid")},
        "inboxes": [strict(row) for row in live.inboxes(config, answer, history.today(config.state_dir))],
        "daemons": [strict(row) for row in live.daemons(config)],
        "workers": [strict(row) for row in live.workers(answer)],
    }
    return JSONResponse(document)


def runs(request: Request) -> Response:
    asked = query.parse(request.query_params)
    limit = asked.limit or 50
    page = history.runs(site(request).config.state_dir, asked.filter, limit, asked.offset)
    following = asked.next_offset(len(page.runs), limit)
    document = {
        "runs": [run_json(r) for r in page.runs],
        "complete": page.complete,
        "next": asked.url("/api/runs", offset=following) if following is not None and page.complete else None,
    }
    return JSONResponse(document)


def export(request: Request) -> Response:
    """Every run the filter matches (up to history.EXPORT_LIMIT), as CSV or JSON: what /runs shows, whole."""
    if request.path_params["kind"] not in ("csv", "json"):
        raise HTTPException(404, "exports are runs.csv and runs.json")
    asked = query.parse(request.query_params)
    page = history.runs(site(request).config.state_dir, asked.filter, history.EXPORT_LIMIT, 0, EXPORT_BUDGET_S)
    headers = {"x-chute-complete": "true" if page.complete else "false"}
    if request.path_params["kind"] == "json":
        return JSONResponse({"runs": [run_json(r) for r in page.runs], "complete": page.complete}, headers=headers)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for run in page.runs:
        row = run_json(run)
        writer.writerow([row.get(c) if row.get(c) is not None else "" for c in CSV_COLUMNS])
    headers["content-disposition"] = 'attachment; filename="chute-runs.csv"'
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


def one_run(request: Request) -> Response:
    """A run's ledger row, its reason, its manifest or report when its result folder has one, its live progress."""
    config = site(request).config
    run = history.get(config.state_dir, request.path_params["run_id"])
    if run is None:
        raise HTTPException(404, "no such run")
    document = run_json(run) | {"error": run.error, "manifest": None, "report": None, "progress": None}
    if run.result:
        for key in ("manifest", "report"):
            document[key] = _document(Path(run.result) / f"{key}.json")
    if run.state.value == "running":
        document["progress"] = live.progress(live.status(config.state_dir)).get(run.run_id)
    return JSONResponse(strict(document))


def _document(path: Path) -> Any:
    try:
        if path.is_symlink() or path.stat().st_size > MAX_DOCUMENT:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


async def retry_one(request: Request) -> Response:
    await json_body(request)
    config, run_id = site(request).config, request.path_params["run_id"]
    if await run_in_threadpool(history.get, config.state_dir, run_id) is None:
        raise HTTPException(404, "no such run")
    done = await _retry(request, [run_id])
    return JSONResponse(done.as_dict(), status_code=200 if done.retried else 409)


async def retry_many(request: Request) -> Response:
    """`{"runs": [ID, ...]}`, or `{"filter": {"job": ..., "q": ...}}` for every failed run it matches."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise HTTPException(400, 'send {"runs": [RUN_ID, ...]} or {"filter": {...}}')
    if isinstance(body.get("runs"), list) and all(isinstance(r, str) for r in body["runs"]):
        ids = body["runs"][: actions.MAX_BULK]
    elif isinstance(body.get("filter"), dict):
        asked = query.parse({k: str(v) for k, v in body["filter"].items() if k in query.KEYS})
        ids = await run_in_threadpool(actions.matching, site(request).config, asked)
    else:
        raise HTTPException(400, 'send {"runs": [RUN_ID, ...]} or {"filter": {...}}')
    return JSONResponse((await _retry(request, ids)).as_dict())


async def _retry(request: Request, ids: list[str]) -> actions.Retried:
    try:
        return await run_in_threadpool(actions.retry, site(request).config, ids)
    except ChuteError as exc:
        raise HTTPException(503, str(exc)) from None


async def pause(request: Request) -> Response:
    body = await json_body(request)
    inbox = body.get("inbox") if isinstance(body, dict) else None
    if not isinstance(inbox, str):
        raise HTTPException(400, 'send {"inbox": PATH}')
    try:
        answer = await run_in_threadpool(actions.pause, site(request).config, request.path_params["op"], inbox)
    except ChuteError as exc:
        raise HTTPException(503, str(exc)) from None
    return JSONResponse({"changed": answer.get("changed", []), "paused": answer.get("paused", [])})


def openapi(request: Request) -> Response:
    return FileResponse(HERE / "openapi.json", media_type="application/json")


ROUTES = [
    Route("/api/inboxes", inboxes),
    Route("/api/runs", runs),
    Route("/api/runs.{kind:str}", export),
    Route("/api/runs/retry", retry_many, methods=["POST"]),
    Route("/api/runs/{run_id:str}", one_run),
    Route("/api/runs/{run_id:str}/retry", retry_one, methods=["POST"]),
    Route("/api/inboxes/{op:str}", pause, methods=["POST"]),
    Route("/api/openapi.json", openapi),
]
