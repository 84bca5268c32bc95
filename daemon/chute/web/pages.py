"""The server-rendered pages: the overview and its live fragment, the history, the failures, the login."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from . import history, live, query
from .fresh import Fresh
from .guard import COOKIE
from .site import form, site

PAGE = 50  # runs per page of /runs and /failures
POLL_S = 2  # the overview's live fragment is asked for this often, only while a page shows it
LIVE = Fresh(max_age=1.0)


def overview(request: Request) -> Response:
    # Read afresh, and so is the next poll's: a pause or resume redirects here, and no page shows the before.
    for authenticated in (False, True):
        LIVE.forget((site(request).config.state_dir, authenticated))
    return site(request).page(request, "overview.html", _overview(request) | {"poll_s": POLL_S})


def overview_live(request: Request) -> Response:
    """The overview's live part (inboxes, daemons, running runs): what htmx asks for every POLL_S seconds."""
    # Read and drawn once a second at most, for every open page (bench/web_load.py); a whole page is read afresh.
    # Keyed by whether the request was authenticated too: the forms' CSRF token depends on it (site.page).
    key = (site(request).config.state_dir, bool(request.scope.get("chute.auth")))
    body = LIVE.get(key, lambda: _overview_live(request))
    return Response(body, media_type="text/html", headers={"cache-control": "no-store"})


def _overview_live(request: Request) -> bytes:
    return bytes(site(request).page(request, "overview_live.html", _overview(request)).body)


def _overview(request: Request) -> dict[str, Any]:
    config = site(request).config
    answer = live.status(config.state_dir)
    progress = live.progress(answer)
    running = history.running(config.state_dir)
    return {
        "daemon": answer,
        "inboxes": live.inboxes(config, answer, history.today(config.state_dir)),
        "daemons": live.daemons(config),
        "workers": live.workers(answer),
        "running": [{"run": r, "progress": progress.get(r.run_id)} for r in running],
    }


def runs_page(request: Request) -> Response:
    return _listing(request, "runs.html", query.parse(request.query_params))


def failures_page(request: Request) -> Response:
    return _listing(request, "failures.html", query.parse(request.query_params, state="failed"))


def _listing(request: Request, template: str, asked: query.Asked) -> Response:
    config = site(request).config
    page = history.runs(config.state_dir, asked.filter, asked.limit or PAGE, asked.offset)
    context = {
        "asked": asked,
        "page": page,
        # A search that ran out of time would only run out again counting: the count is then unknown.
        "count": history.count(config.state_dir, asked.filter)
        if template == "failures.html" and page.complete
        else None,
        "jobs": history.jobs(config.state_dir),
        "inbox_paths": [str(i.path) for i in config.inboxes],
        "states": [s.value for s in query.State],
        "limit": asked.limit or PAGE,
    }
    return site(request).page(request, template, context)


def login_page(request: Request) -> Response:
    if request.scope.get("chute.auth"):
        return RedirectResponse("/", 303)
    return site(request).page(request, "login.html", {"problem": None})


async def login(request: Request) -> Response:
    """The login form: the token in, the session cookie (HttpOnly, SameSite=Strict) out."""
    fields = await form(request, login=True)
    secrets = site(request).secrets
    if not secrets.is_token((fields.get("token") or [""])[0].strip()):
        return site(request).page(request, "login.html", {"problem": "That is not the token."}, status=401)
    response = RedirectResponse("/", 303)
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, secrets.session(), httponly=True, samesite="strict", secure=secure, path="/")
    return response


async def logout(request: Request) -> Response:
    await form(request)
    response = RedirectResponse("/login", 303)
    response.delete_cookie(COOKIE, path="/")
    return response


ROUTES = [
    Route("/", overview),
    Route("/fragments/overview", overview_live),
    Route("/runs", runs_page),
    Route("/failures", failures_page),
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
