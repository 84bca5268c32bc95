"""`/runs/{run_id}`: a run's state and reason, its timeline, logs, manifest, checksums and artifacts."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import Config
from ..ledger import Run
from ..names import text
from . import charts, history, live, run_view
from .files import result_roots
from .site import site


def folder_of(config: Config, run: Run) -> Path | None:
    """The run's result or quarantine folder, only when it lies inside one the config names."""
    if not run.result:
        return None
    folder = Path(os.path.realpath(run.result))
    inside = any(folder.is_relative_to(root) and folder != root for root in result_roots(config))
    return folder if inside else None


def run_page(request: Request) -> Response:
    config = site(request).config
    run_id = request.path_params["run_id"]
    run = history.get(config.state_dir, run_id)
    if run is None:
        raise HTTPException(404, "no such run")
    view = run_view.read(folder_of(config, run))
    progress = live.progress(live.status(config.state_dir)).get(run_id) if run.state.value == "running" else None
    context = {
        "run": run,
        "view": view,
        "reason": (run.error or {}).get("reason") or ((view.manifest or {}).get("error") or {}).get("reason"),
        "timeline": charts.timeline(f"Timeline of {text(run.input_name)}", view.spans) if view.spans else None,
        "progress": progress,
    }
    return site(request).page(request, "run.html", context)


ROUTES = [Route("/runs/{run_id:str}", run_page)]
