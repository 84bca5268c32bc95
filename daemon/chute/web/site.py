"""What every route shares: the `Site` (config, secrets, templates), and the checked body of a POST."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from ..config import Config
from .tokens import Secrets

HERE = Path(__file__).parent
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Site:
    """What every route reads: the config (its ledger and control socket), the secrets, the templates."""

    config: Config
    secrets: Secrets
    templates: Jinja2Templates

    def page(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        """A page from templates/, with what every page shows (the CSRF token, whether a login is needed)."""
        # A page shown before the login (its form) carries the login's CSRF token only: it is shown to anyone.
        csrf = self.secrets.csrf(login=not request.scope.get("chute.auth"))
        shared = {"csrf": csrf, "login_needed": self.secrets.token is not None}
        response = self.templates.TemplateResponse(request, name, shared | context, status_code=status)
        response.headers["cache-control"] = "no-store"
        return response


def site(request: Request) -> Site:
    return request.app.state.site


async def form(request: Request, login: bool = False) -> dict[str, list[str]]:
    """A form POST's fields, after its CSRF token is checked (403 without it or with a wrong one)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise HTTPException(415, "a form is sent as application/x-www-form-urlencoded")
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    offered = (fields.get(CSRF_FIELD) or [request.headers.get(CSRF_HEADER, "")])[0]
    if not site(request).secrets.is_csrf(offered, login):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page")
    return fields


async def json_body(request: Request) -> Any:
    """A JSON POST's body; one authenticated by the login cookie needs the CSRF header too (403)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPException(415, "send JSON, as application/json")
    if request.scope.get("chute.auth") == "cookie" and not site(request).secrets.is_csrf(
        request.headers.get(CSRF_HEADER, "")
    ):
        raise HTTPException(403, "missing or wrong X-CSRF-Token header")
    body = await request.body()
    try:
        return json.loads(body) if body else {}
    except ValueError:
        raise HTTPException(400, "the body is not JSON") from None
