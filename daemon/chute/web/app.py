"""The web app: its routes (pages, the JSON API, artifacts, static files), templates and shared state.

Routes come from one module per part of the page (`pages`, `actions`, `api`, `files`); a new page is a
module with a `ROUTES` list, added to `_routes` below.
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..config import Config
from ..names import text
from .guard import Guard, Scope
from .site import HERE, Site
from .tokens import Secrets


def _routes() -> list[BaseRoute]:
    from . import actions, api, files, pages, run_page, stats_page

    static = Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static")
    return [*pages.ROUTES, *actions.ROUTES, *api.ROUTES, *files.ROUTES, *run_page.ROUTES, *stats_page.ROUTES, static]


async def _http_error(request: Request, exc: Exception) -> Response:
    """A refusal as one line: JSON under /api/, plain text elsewhere (never a traceback)."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        return Response(json.dumps({"error": exc.detail}), exc.status_code, media_type="application/json")
    return Response(f"{exc.detail}\n", exc.status_code, media_type="text/plain")


def create(config: Config, secrets: Secrets, listen_host: str) -> Guard:
    """The app for `config`, behind its Guard."""
    templates = Jinja2Templates(directory=HERE / "templates")
    # A name that is not UTF-8 (a Latin-1 client of a share) shows its odd bytes as \xNN, never a 500.
    # (`type(...) is str`: Markup, a str too, is what a template marked safe, such as the charts' SVG.)
    templates.env.finalize = lambda value: text(value) if type(value) is str else value
    app = Starlette(routes=_routes(), exception_handlers={HTTPException: _http_error})
    app.state.site = Site(config, secrets, templates)

    def login(scope: Scope) -> bytes:
        request = Request(scope)
        return bytes(app.state.site.page(request, "login.html", {"problem": None}, status=401).body)

    hosts = {listen_host, *config.web.allowed_hosts}
    return Guard(app, secrets, hosts, login)
