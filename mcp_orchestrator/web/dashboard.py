"""The web dashboard: runs, one run, events, schedules and approvals, rendered on the server.

Pages are Jinja2 templates (``templates/``, autoescaped) with one script and one style sheet
(``static/``), no inline code or style, so a strict Content-Security-Policy holds. The script
follows ``/api/stream`` (server-sent events) and swaps in the page's fresh ``<main>`` when what
the page shows changed, and sends the actions (cancel, retry, send an event, pause or resume a
schedule) to the JSON API with the page's CSRF token; a decision on a permission request goes to
``POST /approvals/{approval_id}/decision`` here, behind the same checks, so that it is recorded as
a person's from the dashboard, and so do a message to a sub-agent (``POST /runs/{run_id}/messages``)
and a budget (``POST /runs/{run_id}/budget``). The sign-in form (``GET /login``) is rendered here;
``login.py`` handles its POST.

A run's page tells its story as one timeline (``timeline.py``), oldest at the top: its steps, failed
attempts, waits, events received, child runs, a sub-agent's processes and activity, permission requests
and journal moments as a waterfall on the run's time axis, each opening to its values shown whole; beside
it the run's input (or a sub-agent's prompt), output and error, its tree (ancestors and descendants), and
what it and its tree spent against the budget.

A live stream is tied to one page: the server renders that page's ``<main>`` again after each
commit and speaks only when its fingerprint changed, so commits nobody sees (lease renewals,
heartbeats, from this process or another) wake no browser. Streams end after
``STREAM_LIFETIME_S`` (the browser reconnects) and at most ``MAX_STREAMS`` are open at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined
from jinja2.ext import Extension
from markupsafe import Markup
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from .. import __version__
from ..errors import OrchestratorError, RunNotFound, invalid_input_from
from ..models import (
    DecideApprovalInput,
    ListApprovalsInput,
    ListRunsInput,
    Run,
    RunStatus,
    SendEventInput,
    SendMessageInput,
    SetBudgetInput,
    StatusInput,
    StatusResult,
)
from ..runtime import Engine
from ..views import (
    brief,
    budget_words,
    paused_at_budget,
    process_facts,
    schedule_timing,
    silence,
    silences,
    spent,
    token_words,
)
from .api import request_input
from .cells import action_words, span, time_element
from .timeline import ANCESTORS_SHOWN, TIMELINE_SHOWN, json_value, timeline
from .timeline import tree as run_tree

STREAM_KEEPALIVE_S = 15.0
# Where other processes' quiet commits (checkpoints, activity) are not seen (PostgreSQL notifies only of
# waking ones), a page looks again at least this often.
STREAM_RECHECK_S = 2.0
STREAM_SETTLE_S = 0.25  # after a commit, wait this long so that a burst of commits is one look
STREAM_LIFETIME_S = 300.0  # then the server ends the stream and the browser opens a new one
STREAM_RETRY_MS = 2000  # how soon the browser reconnects
MAX_STREAMS = 32  # open at once in this process; more are refused with 503
APPROVALS_SHOWN = 100  # pending requests on a page; the newest decided ones below them
DECIDED_SHOWN = 50
INPUT_SHOWN = 4000  # characters of a request's input (already at most 16 KiB) shown on a page
RUNS_SHOWN = 50  # top-level runs (or, searching or filtering by status, matching runs) on a page of the list
EVENTS_SHOWN = 100  # the newest events on the events page
ACTIVITY_SHOWN = 200  # a sub-agent's latest activity entries on its run page
JOURNAL_READ = 500  # the latest journal entries a run page reads for its timeline
JOURNAL_SHOWN = 100  # of which its journal table lists
PACKAGE = __name__.rpartition(".")[0]  # holds templates/ and static/
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": under it a browser sends "Origin: null" with the dashboard's own POSTs,
    # which the Origin check must refuse. "same-origin" still tells other sites nothing.
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class Page:
    """What a page shows; its fingerprint tells a live stream whether a person would see a change."""

    title: str
    body: Markup  # the rendered content of the page's <main>, under its title
    status: int = 200
    nav: bool = True
    approvals_waiting: int = 0  # the nav's badge: permission requests waiting for a person

    @property
    def fingerprint(self) -> str:
        text = f"{self.status}\0{self.title}\0{self.approvals_waiting}\0{self.body}"
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


Render = Callable[[Request], Awaitable[Page]]


def dashboard_routes(
    engine: Engine,
    token: str | None,
    *,
    max_streams: int = MAX_STREAMS,
    stream_lifetime_s: float = STREAM_LIFETIME_S,
) -> list[BaseRoute]:
    """The pages, the sign-in page (without a ``token`` it sends the browser to ``/``), the live
    stream (bounded by ``max_streams`` and ``stream_lifetime_s``) and the static assets."""

    async def runs_page(request: Request) -> Page:
        query = {key: value for key, value in request.query_params.items() if value}
        filters = {
            "status": request.query_params.getlist("status") or None,
            "name": query.get("name"),
            "label": query.get("label"),
            "workspace": query.get("workspace"),
            "cursor": query.get("cursor"),
            "limit": RUNS_SHOWN,
        }
        args = ListRunsInput.model_validate({k: v for k, v in filters.items() if v})
        listed = await engine.overview.run_list(args, search=query.get("q"))
        every = [run for row in listed.rows for run in (row.run, *row.nested)]
        body = _fragment(
            "runs.html",
            listed=listed,
            silent=await silences(engine, every),
            statuses=list(RunStatus),
            chosen=set(request.query_params.getlist("status")),
            query=query,
            older=_with(request, cursor=listed.next_cursor) if listed.next_cursor else "",
            newest=_with(request, cursor=None) if args.cursor else "",
        )
        return Page("Runs", body)

    async def run_page(request: Request) -> Page:
        run_id = request.path_params["run_id"]
        # What the timeline can show, and no more: its latest steps, the newest children without payloads.
        asked = StatusInput(
            run_id=run_id, journal_limit=JOURNAL_READ, activity_limit=ACTIVITY_SHOWN, steps_limit=TIMELINE_SHOWN
        )
        try:
            status = await engine.runs.status(asked, children=TIMELINE_SHOWN)
        except RunNotFound:
            return Page("Not found", _fragment("error.html", message=f"No run has the id {run_id}."), status=404)
        ancestors, above = await engine.runs.ancestors(run_id, ANCESTORS_SHOWN)
        below, cut = await engine.runs.tree_below(status.children)
        tree = run_tree(status.run, ancestors, above, below, cut)
        retryable = (RunStatus.FAILED, RunStatus.CANCELLED)
        # One read: the newest requests of the run and its tree, the pending ones among them listed to decide.
        requests = await engine.approvals.list(ListApprovalsInput(run_id=run_id, status="all", limit=APPROVALS_SHOWN))
        body = _fragment(
            "run.html",
            run=status.run,
            status=status,
            tree=tree,
            retryable=retryable,
            approvals=[approval for approval in requests.approvals if approval.status == "pending"],
            figures=_figures(status.run),
            timeline=timeline(status, requests.approvals, unread=_unread(status)),
            journal=status.journal[-JOURNAL_SHOWN:],
            silent_s=engine.subagents.silent_for(status.process, engine.now()) if status.process else None,
            budget_paused=paused_at_budget(status.run, status.waits),
            budget_reason=_budget_reason(status),
        )
        return Page(status.run.name, body)

    async def approvals_page(request: Request) -> Page:
        pending = await engine.approvals.list(ListApprovalsInput(status="pending", limit=APPROVALS_SHOWN))
        decided = await engine.approvals.list(ListApprovalsInput(status="decided", limit=DECIDED_SHOWN))
        body = _fragment("approvals.html", pending=pending.approvals, decided=decided.approvals)
        return Page("Approvals", body)

    async def decide(request: Request) -> Response:
        """``POST /approvals/{approval_id}/decision``: a person's decision from a page's buttons,
        behind the same sign-in, Origin, CSRF-token and JSON checks (``auth``) as every write."""
        args = await request_input(DecideApprovalInput, request)
        decided = await engine.approvals.decide(args, by="person", source="dashboard")
        return Response(decided.model_dump_json(), media_type="application/json", headers=SECURITY_HEADERS)

    async def message(request: Request) -> Response:
        """``POST /runs/{run_id}/messages``: a person's message to a sub-agent, from its page's box (the same
        checks as a decision)."""
        sent = await engine.messages.send(await request_input(SendMessageInput, request), source="dashboard")
        return Response(sent.model_dump_json(), media_type="application/json", headers=SECURITY_HEADERS)

    async def budget(request: Request) -> Response:
        """``POST /runs/{run_id}/budget``: a run's budget set or raised from its page's form."""
        result = await engine.budgets.set_budget(await request_input(SetBudgetInput, request))
        return Response(result.model_dump_json(), media_type="application/json", headers=SECURITY_HEADERS)

    async def events_page(request: Request) -> Page:
        return Page("Events", _fragment("events.html", rows=await engine.overview.events(EVENTS_SHOWN)))

    async def send_event(request: Request) -> Response:
        """``POST /events/send``: an event sent from a page's form, recorded with source 'dashboard' (the
        same checks as a decision). Only a signed-in browser sends it: a caller with the bearer token is a
        script, which sends ``POST /events`` and is recorded as one."""
        if token is not None and getattr(request.state, "session", None) is None:
            message = "POST /events/send is the dashboard's form, for a signed-in browser; a script sends POST /events"
            return JSONResponse({"error": "invalid_input", "message": message}, 403, headers=SECURITY_HEADERS)
        sent = await engine.events.send_event(await request_input(SendEventInput, request), source="dashboard")
        return Response(sent.model_dump_json(), media_type="application/json", headers=SECURITY_HEADERS)

    async def schedules_page(request: Request) -> Page:
        rows = await engine.overview.schedules_with_firings()
        return Page("Schedules", _fragment("schedules.html", rows=rows))

    async def login_page(request: Request) -> Response:
        if token is None:  # served without a token: nothing to sign in to
            return RedirectResponse("/", status_code=303)
        return _login()

    pages: dict[str, Render] = {
        path: _badged(engine, render)
        for path, render in {
            "/": runs_page,
            "/runs/{run_id}": run_page,
            "/events": events_page,
            "/schedules": schedules_page,
            "/approvals": approvals_page,
        }.items()
    }
    return [
        *(Route(path, _html(render), methods=["GET"]) for path, render in pages.items()),
        Route("/login", login_page, methods=["GET"]),
        Route("/approvals/{approval_id}/decision", decide, methods=["POST"]),
        Route("/runs/{run_id}/messages", message, methods=["POST"]),
        Route("/runs/{run_id}/budget", budget, methods=["POST"]),
        Route("/events/send", send_event, methods=["POST"]),
        Route("/api/stream", _stream(engine, pages, max_streams, stream_lifetime_s), methods=["GET"]),
        Mount("/static", app=_Static(packages=[(PACKAGE, "static")]), name="static"),
    ]


def _figures(run: Run) -> list[tuple[str, str]]:
    """What a run spent, as (label, value) boxes: its own agent's cost, tokens, turns and model, its tree's
    cost, and its budget."""
    own, tree = run.usage, run.tree_usage
    figures = [("Cost", spent(own))] if own is not None else []
    if tree is not None and tree != own:
        figures.append(("Tree cost", spent(tree)))  # with its descendants
    if own is not None and own.tokens:
        figures.append(("Tokens", token_words(own)))
    if own is not None and own.turns:
        figures.append(("Turns", str(own.turns)))
    if own is not None and own.model:
        figures.append(("Model", own.model))
    if run.budget is not None:
        figures.append(("Budget", budget_words(run)))
    return figures


def _unread(status: StatusResult) -> bool:
    """Whether the run page's bounded reads left older entries of the run in the store."""
    return (
        status.steps_cursor is not None
        or status.activity_cursor is not None
        or len(status.journal) >= JOURNAL_READ
        or len(status.children) >= TIMELINE_SHOWN
    )


def _budget_reason(status: StatusResult) -> str:
    """Why the run is paused at a budget, in the words its journal keeps ('budget reached: $X of $Y ...')."""
    for entry in reversed(status.journal):
        if entry.kind == "budget_reached" and isinstance(reason := entry.detail.get("reason"), str):
            return reason
    return budget_words(status.run)


def _badged(engine: Engine, render: Render) -> Render:
    """The page, or the page that says why not (``_rendered``), with the nav's count of permission requests
    waiting for a person: one count per render, part of the fingerprint, so a live stream updates the badge
    on every page, an error page too."""

    async def render_badged(request: Request) -> Page:
        page = await _rendered(render, request)
        try:
            waiting = await engine.overview.approvals_waiting()
        except OrchestratorError:  # a busy store: the page says so already, or shows without the badge
            return page
        return replace(page, approvals_waiting=waiting)

    return render_badged


def _html(render: Render) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return _document(await render(request), getattr(request.state, "csrf_token", ""))

    return endpoint


async def _rendered(render: Render, request: Request) -> Page:
    """The page, or a page that says specifically why not (a bad address, an unknown run, a busy store)."""
    try:
        return await render(request)
    except ValidationError as exc:  # the address (path or query) holds a value the models refuse
        error: OrchestratorError = invalid_input_from(exc, "address")
    except OrchestratorError as exc:
        error = exc
    status = error.http_status
    title = "Not found" if status == 404 else "Cannot show this page"
    return Page(title, _fragment("error.html", message=f"{error.code}: {error.message}"), status=status)


def _stream(
    engine: Engine, pages: dict[str, Render], max_streams: int, lifetime_s: float
) -> Callable[[Request], Awaitable[Response]]:
    """``GET /api/stream?page=<path and query>&seen=<fingerprint>``: an event whenever that page changes.

    Each event's id is the page's new fingerprint, so a reconnecting browser (``Last-Event-ID``)
    hears at once of a change it missed, and of nothing else. Without ``page``, every commit is news.
    """
    matchers = [(Route(path, render), render) for path, render in pages.items()]
    open_streams = 0

    def version_of(page: str | None) -> Callable[[], Awaitable[str]] | None:
        if page is None:

            async def generation() -> str:
                return str(engine.store.generation)

            return generation
        target = urlsplit(page)
        scope: dict[str, Any] = {
            "type": "http",
            "method": "GET",
            "path": unquote(target.path),
            "root_path": "",
            "query_string": target.query.encode(),
            "headers": [],
        }
        for matcher, render in matchers:
            match, child = matcher.matches(scope)
            if match == Match.FULL and not (target.scheme or target.netloc):
                return _fingerprint(render, Request({**scope, **child}))
        return None

    async def stream(request: Request) -> Response:
        page = request.query_params.get("page")
        version = version_of(page)
        if version is None:
            message = f"page {page!r} is not a dashboard page; give the path of one, e.g. page=/runs/<run_id>"
            return JSONResponse({"error": "invalid_input", "message": message}, 400, headers=SECURITY_HEADERS)
        if open_streams >= max_streams:
            message = (
                f"{open_streams} live-update streams are open, the most this server keeps; "
                "close some dashboard tabs, or reload later"
            )
            headers = {**SECURITY_HEADERS, "Retry-After": "30"}
            return JSONResponse({"error": "too_many_streams", "message": message}, 503, headers=headers)
        seen = request.headers.get("last-event-id") or request.query_params.get("seen") or await version()

        async def changes() -> AsyncIterator[str]:
            nonlocal open_streams
            open_streams += 1
            try:
                async for event in _changes(engine, version, seen, time.monotonic() + lifetime_s):
                    yield event
            finally:
                open_streams -= 1

        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(changes(), media_type="text/event-stream", headers=headers)

    return stream


async def _changes(
    engine: Engine, version: Callable[[], Awaitable[str]], seen: str, deadline: float
) -> AsyncIterator[str]:
    """Server-sent events: one when ``version()`` differs from what the browser last saw, a
    keepalive comment when nothing happened for a while, and the end at ``deadline``."""
    yield f"retry: {STREAM_RETRY_MS}\n\n"
    patience = STREAM_KEEPALIVE_S if engine.store.sees_quiet_commits else STREAM_RECHECK_S
    while (left := deadline - time.monotonic()) > 0:
        since = engine.store.generation  # read before looking, so a commit while looking is not missed
        current = await version()
        if current != seen:
            seen = current
            yield f"id: {current}\ndata: {current}\n\n"
        await engine.store.wait_for_change(min(patience, left), since)
        if engine.store.generation == since:
            yield ": keepalive\n\n"
        else:
            await asyncio.sleep(STREAM_SETTLE_S)


def _fingerprint(render: Render, request: Request) -> Callable[[], Awaitable[str]]:
    async def fingerprint() -> str:
        return (await render(request)).fingerprint

    return fingerprint


class _Static(StaticFiles):
    """The script and the style sheet, with the dashboard's security headers; ``no-cache`` so a
    browser revalidates them (cheaply, by ETag) and never runs an old script against a new server."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update({**SECURITY_HEADERS, "Cache-Control": "no-cache"})
        return response


class _Compact(Extension):
    """Templates are written one tag a line; a line break between two tags (or template tags)
    is layout of the source, never output, so the pages stay as compact as their text."""

    BETWEEN_TAGS = re.compile(r"(?<=[>}])[ \t]*\n\s*(?=[<{])")

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return self.BETWEEN_TAGS.sub("", source)


def _segment(value: str) -> str:
    """One path segment, percent-encoded whole: a name holding ``/ ? # ..`` stays inside its segment."""
    return quote(value, safe="")


def _run_href(run_id: str) -> str:
    return f"/runs/{_segment(run_id)}"


def _prefill(match: dict[str, Any] | None) -> str:
    """The data a send-event form starts with: what the wait matches on, e.g. ``data.pr``."""
    data: dict[str, Any] = {}
    for path, value in (match or {}).items():
        if path.startswith("data.") and "." not in path[5:]:
            data[path[5:]] = value
    return json.dumps(data) if data else ""


TEMPLATES = Environment(
    loader=PackageLoader(PACKAGE, "templates"),
    autoescape=True,
    undefined=StrictUndefined,  # a name a template misspells fails the page, never renders as blank
    auto_reload=False,  # installed templates do not change under a running server
    extensions=[_Compact],
)
TEMPLATES.globals.update(
    when=time_element,  # a <time> element the script makes relative (cells.py)
    span=span,
    action_words=action_words,
    brief=brief,
    schedule_timing=schedule_timing,
    process_facts=process_facts,
    spent=spent,
    silence=silence,
    input_shown=INPUT_SHOWN,
    run_href=_run_href,
    prefill=_prefill,
    json_value=json_value,  # the run page's values, whole and foldable (timeline.py)
)
TEMPLATES.filters["segment"] = _segment


def _fragment(template: str, **context: Any) -> Markup:
    """A page's content (what goes in its ``<main>``), rendered from ``templates/``."""
    return Markup(TEMPLATES.get_template(template).render(**context))


def _login(message: str = "", status: int = 200) -> Response:
    """The sign-in page (also the answer to a wrong token, from ``login.py``)."""
    return _document(Page("Sign in", _fragment("login.html", message=message), status=status, nav=False))


def _document(page: Page, csrf_token: str = "") -> HTMLResponse:
    """The whole HTML document, with the headers that keep other sites from framing or reading it."""
    html = TEMPLATES.get_template("layout.html").render(page=page, csrf_token=csrf_token, version=__version__)
    return HTMLResponse(html, status_code=page.status, headers=SECURITY_HEADERS)


def _with(request: Request, **changes: str | None) -> str:
    """The page's query with ``changes`` (None: left out), every repeated parameter kept (two statuses)."""
    kept = [(key, value) for key, value in request.query_params.multi_items() if key not in changes]
    return urlencode([*kept, *((key, value) for key, value in changes.items() if value)])
