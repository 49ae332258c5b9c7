"""The dashboard the agent serves at ``/ui``: pages rendered here (Jinja2, every value escaped),
a small script that keeps them live from the API (the event stream, log follows) and acts through
the API's own routes, and Chart.js for the usage chart. No build step: the templates, the script
and the chart library are files of this package.

Who may see and do what is the API's business: a page names its caller as any route does
(:func:`~conveyor.agent.dependencies.caller_of`, with the token of the session cookie), and the
buttons call the API's control routes, which apply the token's policy and answer its refusals.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from ... import __version__
from ...errors import ConveyorError, PolicyRefused
from ...operations import VERBS
from ...state import JobState
from .. import API_PREFIX
from ..dependencies import OWNER_OVER_TCP, caller_of, check_reach
from ..errors import ApiError
from ..session import COOKIE, csrf_matches, csrf_token, session_token

PREFIX = "/ui"
HERE = Path(__file__).parent
PAGE_SIZE = 50
# The buttons of a job's page: the verbs a person uses on one job, in the order shown.
BUTTONS = ("hold", "release", "suspend", "resume", "cancel", "remove")
DESTRUCTIVE = frozenset({"cancel", "remove"})  # the page asks before these

templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
router = APIRouter(prefix=PREFIX, include_in_schema=False)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(PREFIX + "/static", StaticFiles(directory=HERE / "static"), name="ui-static")


class _LogIn(Exception):
    """The page needs a caller and the request names none: to the login page."""


def _caller(request: Request):
    try:
        return caller_of(request)
    except ApiError as exc:
        if exc.status == 401:
            raise _LogIn() from None
        raise


def _page(request: Request, template: str, **values) -> HTMLResponse:
    token = session_token(request)
    who = caller_of(request)
    html = templates.get_template(template).render(
        request=request, who=who.name, csrf=csrf_token(token) if token else "", api=API_PREFIX, ui=PREFIX,
        version=__version__, states=[s.value for s in JobState], **values,
    )
    return HTMLResponse(html, headers=_HEADERS)


# The pages load nothing from elsewhere and run no inline script: a job name that slipped past
# the escaping still could not run.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _login_page(error: str | None = None, status: int = 200) -> HTMLResponse:
    html = templates.get_template("login.html").render(error=error, ui=PREFIX, api=API_PREFIX, page="login", version=__version__, who=None, csrf="")
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


async def _guarded(request: Request, render):
    """Render a page for its caller, or send the browser to log in."""
    try:
        await run_in_threadpool(_caller, request)
        return await run_in_threadpool(render)
    except _LogIn:
        return RedirectResponse(f"{PREFIX}/login?{urlencode({'next': request.url.path})}", status_code=303)
    except ApiError as exc:
        return _login_page(exc.message, exc.status)
    except ConveyorError as exc:  # no such job, say
        page = _page(request, "error.html", page="error", title="Not here", message=str(exc))
        page.status_code = exc.status or 409
        return page


# ---------------------------------------------------------------------------------- access


@router.get("/login")
def login_form() -> HTMLResponse:
    return _login_page()


@router.post("/login")
async def login(request: Request):
    origin = request.headers.get("origin")
    if origin not in (None, "null") and origin.split("://", 1)[-1] != request.headers.get("host"):
        # another site's page posting its own token here would log this browser in as that token
        return _login_page("a login must come from this dashboard's own page", 403)
    form = parse_qs((await request.body()).decode(errors="replace"))
    token = (form.get("token") or [""])[0].strip()
    agent = request.app.state.agent
    who = agent.callers.resolve(f"Bearer {token}") if token else None
    if who is None:
        return _login_page("that token is not valid here: give the token of agent.token, or one made by 'conveyor token create'", 401)
    if who.owner and not agent.listener_admits_owner(request.scope):
        return _login_page(OWNER_OVER_TCP, 403)
    nxt = (form.get("next") or [""])[0]
    target = nxt if nxt.startswith(PREFIX + "/") and "//" not in nxt else f"{PREFIX}/jobs"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/")
    return response


@router.post("/logout")
async def logout(request: Request):
    form = parse_qs((await request.body()).decode(errors="replace"))
    token = session_token(request)
    if token is not None and not csrf_matches(token, (form.get("csrf") or [None])[0]):
        raise ApiError(403, "csrf", "logging out needs the page's CSRF token: reload the page and try again", "csrf")
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("")
@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/jobs", status_code=303)


# ---------------------------------------------------------------------------------- pages


@router.get("/jobs")
async def jobs_page(request: Request):
    return await _guarded(request, lambda: _page(request, "jobs.html", page="jobs"))


@router.get("/jobs/{ref}")
async def job_page(request: Request, ref: str):
    ex = request.app.state.agent.executor

    def render():
        job = ex.info(ref)
        try:  # its outputs' names are the job's contents: shown to whom may read them
            check_reach(ex, caller_of(request), job.id, "read", "outputs")
            outputs = _quiet(ex.outputs, job.id) or []
        except PolicyRefused:
            outputs = []
        timeline = [t.to_dict() for t in ex.transitions(0, job.id, 1000)]
        verbs = {v.name: sorted(s.value for s in v.applies_to) for v in VERBS if v.name in BUTTONS}
        return _page(
            request, "job.html", page="job", job=job, spec=json.dumps(job.to_dict()["spec"], indent=2),
            timeline=timeline, attempts=_quiet(ex.attempts, job.id) or [], outputs=outputs,
            provenance=_pretty(_quiet(ex.provenance, job.id)), buttons=BUTTONS, destructive=DESTRUCTIVE,
            verbs=verbs, record=ex.store.get(job.id), limit=(job.to_dict()["resources"] or {}).get("memory"),
        )

    return await _guarded(request, render)


@router.get("/arrays/{ref}")
async def array_page(request: Request, ref: str):
    ex = request.app.state.agent.executor

    def render():
        tasks = [{"id": i, "index": n, "state": s.value} for i, n, s in ex.array_tasks(ref)]
        return _page(request, "array.html", page="array", array=ex.array(ref), tasks=tasks)

    return await _guarded(request, render)


@router.get("/queue")
async def queue_page(request: Request):
    ex = request.app.state.agent.executor
    return await _guarded(request, lambda: _page(request, "queue.html", page="queue", queue=ex.queue(limit=500)))


@router.get("/node")
async def node_page(request: Request):
    ex = request.app.state.agent.executor
    return await _guarded(request, lambda: _page(
        request, "node.html", page="node", machine=ex.machine(), leases=ex.lease_list(),
    ))


def _quiet(read, *args):
    """What ``read`` answers, or None where the job has none (no provenance yet, say)."""
    try:
        return read(*args)
    except ConveyorError:
        return None


def _pretty(value) -> str | None:
    return None if value is None else json.dumps(value, indent=2, sort_keys=True)


# ---------------------------------------------------------------------------------- data the pages fetch


@router.get("/data/jobs")
def jobs_data(
    request: Request,
    state: list[JobState] | None = Query(default=None),
    label: str | None = Query(default=None, max_length=512),
    q: str | None = Query(default=None, max_length=256),
    array: str | None = Query(default=None, max_length=64),
    lease: str | None = Query(default=None, max_length=64),
    cursor: str | None = Query(default=None, max_length=20, pattern="^[0-9]+$"),
    limit: int = Query(default=PAGE_SIZE, ge=1, le=500),
):
    """One page of the jobs list (newest first) and the count of jobs in each state."""
    caller_of(request)
    store = request.app.state.agent.executor.store
    labels = None
    if label:
        key, eq, value = label.partition("=")
        labels = {key: value if eq else None}
    page, nxt = store.page(limit, cursor, newest_first=True, states=state, labels=labels, search=q or None,
                           array_id=array or None, lease_id=lease or None)
    return JSONResponse({
        "jobs": [_row(rec) for rec in page],
        "next": nxt,
        "counts": store.state_counts(),
    }, headers={"Cache-Control": "no-store"})


def _row(rec) -> dict:
    return {
        "id": rec.id, "name": rec.name, "state": rec.state.value, "substate": rec.substate,
        "exit_code": rec.exit_code, "created_at": rec.created_at, "image": rec.spec.image,
        "labels": rec.spec.labels, "array_id": rec.array_id, "array_index": rec.array_index, "lease_id": rec.lease_id,
    }


@router.get("/jobs/{ref}/logs.txt")
def log_download(request: Request, ref: str, stream: str = Query(default="stdout", pattern="^(stdout|stderr)$")):
    """One stream of a job's output as a file to save."""
    who = caller_of(request)
    ex = request.app.state.agent.executor
    job_id = ex.store.resolve(ref)
    check_reach(ex, who, job_id, "read", "logs")
    chunks = ex.logs(job_id, stream)
    return StreamingResponse((data for _, data in chunks), media_type="text/plain; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{job_id}.{stream}.log"', "X-Content-Type-Options": "nosniff",
    })


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)
