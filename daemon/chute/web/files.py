"""A run's artifacts, served only from inside its result folder under a configured outbox or quarantine.

`/files/{run_id}/{path}`: the path is taken apart (no `..`, no empty part, however it was encoded), joined
to the run's result folder, resolved (symlinks followed), and must still be inside that folder, which must
itself be inside one of the config's outboxes or quarantines. Anything else is a 404, the same answer as a
file that is not there, so the page tells nothing about what lies outside.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from ..config import Config
from . import history
from .site import site


def result_roots(config: Config) -> list[Path]:
    """The folders artifacts may come from: each inbox's outbox and quarantine, resolved."""
    return [Path(os.path.realpath(p)) for i in config.inboxes for p in (i.outbox, i.quarantine)]


def artifact(config: Config, run_id: str, path: str) -> Path | None:
    """The file `path` names in run `run_id`'s result folder, or None when it is not one to serve."""
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
        return None
    run = history.get(config.state_dir, run_id)
    if run is None or not run.result:
        return None
    folder = Path(os.path.realpath(run.result))
    if not any(folder.is_relative_to(root) and folder != root for root in result_roots(config)):
        return None
    target = Path(os.path.realpath(folder.joinpath(*parts)))
    if not target.is_relative_to(folder) or not target.is_file():
        return None
    return target


def serve(request: Request) -> Response:
    found = artifact(site(request).config, request.path_params["run_id"], request.path_params["path"])
    if found is None:
        raise HTTPException(404, "not found")
    # An artifact is the user's content: an HTML or SVG one must not run script as the page (same origin).
    headers = {"cache-control": "private, max-age=60", "content-security-policy": "sandbox"}
    return FileResponse(found, headers=headers)


ROUTES = [Route("/files/{run_id:str}/{path:path}", serve)]
