"""The web dashboard: runs, one run, events and schedules, rendered on the server.

Pages are plain HTML with one script and one style sheet (``/static/``), no inline code or style,
so a strict Content-Security-Policy holds. The script follows ``/api/stream`` (server-sent
events) and swaps in the page's fresh ``<main>`` when what the page shows changed, and sends the
actions (cancel, retry, send an event, pause or resume a schedule) to the JSON API with the
page's CSRF token. The sign-in form (``GET /login``) is rendered here; ``login.py`` handles its POST.

A live stream is tied to one page: the server renders that page again after each commit and
speaks only when the page's fingerprint changed, so commits nobody sees (lease renewals,
heartbeats, from this process or another) wake no browser. Streams end after
``STREAM_LIFETIME_S`` (the browser reconnects) and at most ``MAX_STREAMS`` are open at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from html import escape
from importlib.resources import files
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Match, Route

from .. import __version__
from ..engine import Engine
from ..errors import OrchestratorError, RunNotFound, invalid_input_from
from ..models import ListEventsInput, ListRunsInput, ListSchedulesInput, Run, RunStatus, StatusInput, StatusResult
from .failures import DEFAULT_STATUS, STATUS

STREAM_KEEPALIVE_S = 15.0
STREAM_SETTLE_S = 0.25  # after a commit, wait this long so that a burst of commits is one look
STREAM_LIFETIME_S = 300.0  # then the server ends the stream and the browser opens a new one
STREAM_RETRY_MS = 2000  # how soon the browser reconnects
MAX_STREAMS = 32  # open at once in this process; more are refused with 503
MAX_DEPTH_SHOWN = 8  # deeper children are indented like this depth (dashboard.css has depth-0 to -8)
STATIC = files(__package__) / "static"
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
    body: str
    status: int = 200
    nav: bool = True

    @property
    def fingerprint(self) -> str:
        text = f"{self.status}\0{self.title}\0{self.body}"
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


Render = Callable[[Request], Awaitable[Page]]


def dashboard_routes(
    engine: Engine,
    token: str | None,
    *,
    max_streams: int = MAX_STREAMS,
    stream_lifetime_s: float = STREAM_LIFETIME_S,
) -> list[Route]:
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
            "limit": 50,
        }
        listed = await engine.list_runs(ListRunsInput.model_validate({k: v for k, v in filters.items() if v}))
        rows = "".join(
            f"<tr><td><a href='{_run_href(r.run_id)}'>{escape(r.name)}</a></td><td>{_badge(r.status)}</td>"
            f"<td>{_labels(r.labels)}</td><td>{_when(r.created_at)}</td><td>{_when(r.updated_at)}</td>"
            f"<td class='muted'>{escape(r.workspace or '')}</td><td class='mono muted'>{escape(r.run_id)}</td></tr>"
            for r in listed.runs
        )
        more = (
            f"<p><a href='?{escape(_with(request, cursor=listed.next_cursor))}'>older runs →</a></p>"
            if listed.next_cursor
            else ""
        )
        chosen = set(request.query_params.getlist("status"))
        boxes = "".join(
            f"<label><input type='checkbox' name='status' value='{s}'{' checked' if s in chosen else ''}> {s}</label>"
            for s in RunStatus
        )
        form = (
            f"<form class='filters' method='get'>{boxes}"
            f"<input name='name' placeholder='name' value='{escape(query.get('name', ''))}'>"
            f"<input name='label' placeholder='label key=value' value='{escape(query.get('label', ''))}'>"
            f"<input name='workspace' placeholder='workspace' value='{escape(query.get('workspace', ''))}'>"
            "<button>Filter</button></form>"
        )
        table = _table(["Run", "Status", "Labels", "Created", "Updated", "Workspace", "Id"], rows, "No runs.")
        return Page("Runs", form + table + more)

    async def run_page(request: Request) -> Page:
        run_id = request.path_params["run_id"]
        try:
            status = await engine.status(StatusInput(run_id=run_id, journal_limit=100))
        except RunNotFound:
            return Page("Not found", f"<p class='error'>No run has the id {escape(run_id)}.</p>", status=404)
        tree = await engine.descendants(status.children)
        return Page(status.run.name, _run_detail(status, tree))

    async def events_page(request: Request) -> Page:
        listed = await engine.list_events(ListEventsInput(limit=100))
        rows = "".join(
            f"<tr><td>{escape(e.name)}</td><td class='mono'>{escape(_brief(e.data, 200))}</td>"
            f"<td>{escape(e.source)}</td><td>{_when(e.received_at)}</td>"
            f"<td class='mono muted'>{escape(e.event_id)}</td></tr>"
            for e in listed.events
        )
        return Page("Events", _send_form("", None) + _table(["Name", "Data", "Source", "Received", "Id"], rows))

    async def schedules_page(request: Request) -> Page:
        listed = await engine.schedules.list(ListSchedulesInput())
        rows = ""
        for s in listed.schedules:
            timing = f"{s.cron} ({s.timezone})" if s.cron else f"every {s.every_s:g} s" if s.every_s else f"at {s.at}"
            last = f"{s.last.outcome} {_when(s.last.fired_at)}" if s.last else ""
            verb = "pause" if s.enabled else "resume"
            button = _button(f"/api/schedules/{_segment(s.name)}/{verb}", verb.title())
            rows += (
                f"<tr><td>{escape(s.name)}</td><td>{escape(timing)}</td><td>{escape(s.action.type)}</td>"
                f"<td>{'enabled' if s.enabled else 'paused'}</td><td>{escape(last)}</td>"
                f"<td>{_when(s.upcoming[0]) if s.upcoming else ''}</td><td>{button}</td></tr>"
            )
        headers = ["Schedule", "When", "Action", "State", "Last firing", "Next due", ""]
        return Page("Schedules", _table(headers, rows, "No schedules."))

    async def login_page(request: Request) -> Response:
        if token is None:  # served without a token: nothing to sign in to
            return RedirectResponse("/", status_code=303)
        return _login()

    pages: dict[str, Render] = {
        "/": runs_page,
        "/runs/{run_id}": run_page,
        "/events": events_page,
        "/schedules": schedules_page,
    }
    return [
        *(Route(path, _html(render), methods=["GET"]) for path, render in pages.items()),
        Route("/login", login_page, methods=["GET"]),
        Route("/api/stream", _stream(engine, pages, max_streams, stream_lifetime_s), methods=["GET"]),
        Route("/static/dashboard.js", _static("dashboard.js", "text/javascript"), methods=["GET"]),
        Route("/static/dashboard.css", _static("dashboard.css", "text/css"), methods=["GET"]),
    ]


def _html(render: Render) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return _document(await _rendered(render, request), getattr(request.state, "csrf_token", ""))

    return endpoint


async def _rendered(render: Render, request: Request) -> Page:
    """The page, or a page that says specifically why not (a bad address, an unknown run, a busy store)."""
    try:
        return await render(request)
    except ValidationError as exc:  # the address (path or query) holds a value the models refuse
        error: OrchestratorError = invalid_input_from(exc, "address")
    except OrchestratorError as exc:
        error = exc
    status = STATUS.get(error.code, DEFAULT_STATUS)
    title = "Not found" if status == 404 else "Cannot show this page"
    return Page(title, f"<p class='error'>{escape(error.code)}: {escape(error.message)}</p>", status=status)


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
    while (left := deadline - time.monotonic()) > 0:
        since = engine.store.generation  # read before looking, so a commit while looking is not missed
        current = await version()
        if current != seen:
            seen = current
            yield f"id: {current}\ndata: {current}\n\n"
        await engine.store.wait_for_change(min(STREAM_KEEPALIVE_S, left), since)
        if engine.store.generation == since:
            yield ": keepalive\n\n"
        else:
            await asyncio.sleep(STREAM_SETTLE_S)


def _fingerprint(render: Render, request: Request) -> Callable[[], Awaitable[str]]:
    async def fingerprint() -> str:
        return (await _rendered(render, request)).fingerprint

    return fingerprint


def _static(name: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    content = (STATIC / name).read_bytes()

    async def asset(request: Request) -> Response:
        return Response(content, media_type=media_type, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    return asset


def _segment(value: str) -> str:
    """One path segment, percent-encoded whole: a name holding ``/ ? # ..`` stays inside its segment."""
    return quote(value, safe="")


def _run_href(run_id: str) -> str:
    return f"/runs/{_segment(run_id)}"


def _button(action: str, label: str, confirm: str | None = None) -> str:
    """A button the script turns into a POST to ``action`` (a path built with ``_segment``)."""
    asked = f" data-confirm='{escape(confirm)}'" if confirm else ""
    return f"<button data-post='{escape(action)}'{asked}>{escape(label)}</button>"


def _run_link(run_id: str, text: str) -> str:
    return f"<a href='{escape(_run_href(run_id))}'>{escape(text)}</a>"


def _run_detail(status: StatusResult, tree: list[tuple[int, Run]]) -> str:
    run = status.run
    actions = ""
    if not run.status.terminal:
        actions += _button(f"/api{_run_href(run.run_id)}/cancel", "Cancel", confirm="Cancel this run?")
    if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
        actions += _button(f"/api{_run_href(run.run_id)}/retry", "Retry")
    facts = [
        ("Status", _badge(run.status)),
        ("Id", f"<span class='mono'>{escape(run.run_id)}</span>"),
        ("Key", escape(run.key or "")),
        ("Parent", _run_link(run.parent_run_id, run.parent_run_id) if run.parent_run_id else ""),
        ("Labels", _labels(run.labels)),
        ("Workspace", escape(run.workspace or "")),
        ("Created", _when(run.created_at)),
        ("Ended", _when(run.ended_at)),
        ("Output", _pre(run.output)),
        ("Error", _pre(run.error)),
    ]
    html = (
        f"<div class='actions'>{actions}</div>"
        + "<dl>"
        + "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts if value)
        + "</dl>"
    )
    steps = "".join(
        f"<tr><td>{escape(s.step)}</td><td>{s.kind}</td><td>{_badge(s.status)}</td><td>{s.attempt}</td>"
        f"<td>{_when(s.started_at)}</td><td>{_duration(s.started_at, s.ended_at)}</td>"
        f"<td class='mono'>{escape(_brief(s.error if s.error is not None else s.output, 160))}</td></tr>"
        for s in status.steps
    )
    html += "<h2>Steps</h2>" + _table(["Step", "Kind", "Status", "Attempt", "Started", "Took", "Output / error"], steps)
    if status.waits:
        waits = ""
        for w in status.waits:
            what = " or ".join(w.events) if w.kind == "event" else "time" if w.kind == "sleep" else f"{w.mode} runs"
            send = _send_form(w.events[0], w.match) if w.kind == "event" else ""
            waits += (
                f"<tr><td>{escape(w.step)}</td><td>{escape(what)}</td><td>{_when(w.until)}</td><td>{send}</td></tr>"
            )
        html += "<h2>Waiting for</h2>" + _table(["Step", "For", "Until", ""], waits)
    if tree:
        children = "".join(
            f"<tr><td class='depth-{min(depth, MAX_DEPTH_SHOWN)}'>{_run_link(c.run_id, c.name)}</td>"
            f"<td>{_badge(c.status)}</td><td>{_when(c.ended_at)}</td></tr>"
            for depth, c in tree
        )
        html += "<h2>Children</h2>" + _table(["Run", "Status", "Ended"], children)
    if status.process is not None:
        p = status.process
        facts = [escape(p.profile), str(p.state), f"attempt {p.attempt} of up to {p.max_attempts}"]
        if p.pid:
            facts.append(f"pid {p.pid} (group {p.pgid}) on {escape(p.host or '')}")
        if p.exited_at:
            facts.append(f"exit {p.exit_code}")
        if p.worktree:
            facts.append(f"worktree {escape(p.worktree)} ({escape(p.branch or '')})")
        html += f"<h2>Process</h2><p>{', '.join(facts)}</p>"
        for stream, lines in status.log_tail.items():
            if lines:
                html += f"<h3>{stream}</h3><pre class='log'>{escape(chr(10).join(lines))}</pre>"
    journal = "".join(
        f"<tr><td>{j.seq}</td><td>{_when(j.at)}</td><td>{escape(j.kind)}</td><td>{escape(j.step or '')}</td>"
        f"<td class='mono'>{escape(_brief(j.detail, 160) if j.detail else '')}</td></tr>"
        for j in reversed(status.journal)
    )
    return html + "<h2>Journal</h2>" + _table(["#", "At", "What", "Step", "Detail"], journal)


def _send_form(name: str, match: dict[str, Any] | None) -> str:
    data: dict[str, Any] = {}
    for path, value in (match or {}).items():  # prefill what the wait matches on, e.g. data.pr
        if path.startswith("data.") and "." not in path[5:]:
            data[path[5:]] = value
    return (
        "<form class='send-event' data-send-event>"
        f"<input name='name' placeholder='event name' value='{escape(name)}' required>"
        f"<input name='data' placeholder='data (JSON)' value='{escape(json.dumps(data) if data else '')}'>"
        "<button>Send event</button></form>"
    )


def _login(message: str = "", status: int = 200) -> Response:
    """The sign-in page (also the answer to a wrong token, from ``login.py``)."""
    error = f"<p class='error'>{escape(message)}</p>" if message else ""
    body = (
        f"{error}<form method='post' action='/login' class='login'>"
        "<label>Token <input type='password' name='token' autofocus required></label>"
        "<button>Sign in</button></form>"
        "<p class='muted'>The token is in the state directory; <code>mcp-orchestrator token</code> prints it.</p>"
    )
    return _document(Page("Sign in", body, status=status, nav=False))


def _document(page: Page, csrf_token: str = "") -> HTMLResponse:
    """The whole HTML document, with the headers that keep other sites from framing or reading it."""
    links = (
        "<nav><a href='/'>Runs</a><a href='/events'>Events</a><a href='/schedules'>Schedules</a>"
        f"<span class='muted'>mcp-orchestrator {__version__}</span></nav>"
        if page.nav
        else ""
    )
    return HTMLResponse(
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(page.title)} · mcp-orchestrator"
        "</title><meta name='viewport' content='width=device-width'>"
        f"<meta name='csrf-token' content='{escape(csrf_token)}'><link rel='icon' href='data:,'>"
        "<link rel='stylesheet' href='/static/dashboard.css'><script src='/static/dashboard.js' defer></script>"
        f"</head><body>{links}<main data-fingerprint='{page.fingerprint}'><h1>{escape(page.title)}</h1>{page.body}"
        "</main></body></html>",
        status_code=page.status,
        headers=SECURITY_HEADERS,
    )


def _table(headers: list[str], rows: str, empty: str = "Nothing yet.") -> str:
    if not rows:
        return f"<p class='muted'>{empty}</p>"
    head = "".join(f"<th>{h}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _badge(status: str) -> str:
    return f"<span class='badge {escape(str(status))}'>{escape(str(status))}</span>"


def _labels(labels: dict[str, str]) -> str:
    return " ".join(f"<span class='label'>{escape(k)}={escape(v)}</span>" for k, v in labels.items())


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _duration(started: datetime, ended: datetime | None) -> str:
    if ended is None:
        return ""
    seconds = (ended - started).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _brief(value: Any, limit: int) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pre(value: Any) -> str:
    return "" if value is None else f"<pre>{escape(_brief(value, 4000))}</pre>"


def _with(request: Request, **changes: str | None) -> str:
    params = {key: value for key, value in request.query_params.multi_items() if key not in changes}
    return urlencode([*params.items(), *((k, v) for k, v in changes.items() if v)])
