"""The web dashboard: runs, one run, events and schedules, rendered on the server.

Pages are plain HTML with one small script (``/static/dashboard.js``): it follows
``/api/stream`` (server-sent events, one per change in the store) and swaps in the page's fresh
``<main>``, so nothing needs a reload; and it sends the actions (cancel, retry, send an event,
pause or resume a schedule) to the JSON API. Every asset is served from here. A browser signs in
once at ``/login`` with the token; the server answers with an http-only, same-site cookie.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import __version__
from ..engine import Engine
from ..errors import OrchestratorError, RunNotFound
from ..models import ListEventsInput, ListRunsInput, ListSchedulesInput, Run, RunStatus, StatusInput, StatusResult
from .auth import COOKIE

STREAM_KEEPALIVE_S = 15.0


def dashboard_routes(engine: Engine, token: str | None) -> list[Route]:
    async def runs_page(request: Request) -> Response:
        query = {key: value for key, value in request.query_params.items() if value}
        filters = {
            "status": request.query_params.getlist("status") or None,
            "name": query.get("name"),
            "label": query.get("label"),
            "workspace": query.get("workspace"),
            "cursor": query.get("cursor"),
            "limit": 50,
        }
        try:
            listed = await engine.list_runs(ListRunsInput.model_validate({k: v for k, v in filters.items() if v}))
        except (OrchestratorError, ValueError) as exc:
            return _page("Runs", f'<p class="error">{escape(str(exc))}</p>', status=400)
        rows = "".join(
            f"<tr><td><a href='/runs/{r.run_id}'>{escape(r.name)}</a></td><td>{_badge(r.status)}</td>"
            f"<td>{_labels(r.labels)}</td><td>{_when(r.created_at)}</td><td>{_when(r.updated_at)}</td>"
            f"<td class='muted'>{escape(r.workspace or '')}</td><td class='mono muted'>{r.run_id}</td></tr>"
            for r in listed.runs
        )
        more = (
            f"<p><a href='?{_with(request, cursor=listed.next_cursor)}'>older runs →</a></p>"
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
        return _page("Runs", form + table + more)

    async def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            status = await engine.status(StatusInput(run_id=run_id, journal_limit=100))
        except RunNotFound:
            return _page("Not found", f"<p class='error'>No run has the id {escape(run_id)}.</p>", status=404)
        tree = await engine.descendants(status.children)
        return _page(status.run.name, _run_detail(status, tree))

    async def events_page(request: Request) -> Response:
        listed = await engine.list_events(ListEventsInput(limit=100))
        rows = "".join(
            f"<tr><td>{escape(e.name)}</td><td class='mono'>{escape(_brief(e.data, 200))}</td>"
            f"<td>{escape(e.source)}</td><td>{_when(e.received_at)}</td>"
            f"<td class='mono muted'>{escape(e.event_id)}</td></tr>"
            for e in listed.events
        )
        return _page("Events", _send_form("", None) + _table(["Name", "Data", "Source", "Received", "Id"], rows))

    async def schedules_page(request: Request) -> Response:
        listed = await engine.schedules.list(ListSchedulesInput())
        rows = ""
        for s in listed.schedules:
            timing = f"{s.cron} ({s.timezone})" if s.cron else f"every {s.every_s:g} s" if s.every_s else f"at {s.at}"
            last = f"{s.last.outcome} {_when(s.last.fired_at)}" if s.last else ""
            verb = "pause" if s.enabled else "resume"
            button = f"<button data-post='/api/schedules/{escape(s.name)}/{verb}'>{verb.title()}</button>"
            rows += (
                f"<tr><td>{escape(s.name)}</td><td>{escape(timing)}</td><td>{s.action.type}</td>"
                f"<td>{'enabled' if s.enabled else 'paused'}</td><td>{escape(last)}</td>"
                f"<td>{_when(s.upcoming[0]) if s.upcoming else ''}</td><td>{button}</td></tr>"
            )
        headers = ["Schedule", "When", "Action", "State", "Last firing", "Next due", ""]
        return _page("Schedules", _table(headers, rows, "No schedules."))

    async def login_page(request: Request) -> Response:
        if token is None:  # served without a token: nothing to sign in to
            return RedirectResponse("/", status_code=303)
        if request.method == "POST":
            form = parse_qs((await request.body()).decode(errors="replace"))  # the form is urlencoded
            given = (form.get("token") or [""])[0].strip()
            if hmac.compare_digest(given.encode(), token.encode()):
                response = RedirectResponse("/", status_code=303)
                secure = request.url.scheme == "https"
                response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/")
                return response
            return _login("That is not the token. 'mcp-orchestrator token' prints it.", status=401)
        return _login()

    async def stream(request: Request) -> Response:
        async def changes() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            while not await request.is_disconnected():
                since = engine.store.generation
                await engine.store.wait_for_change(STREAM_KEEPALIVE_S, since)
                if engine.store.generation != since:
                    yield f"data: {engine.store.generation}\n\n"
                    await asyncio.sleep(0.25)  # a burst of commits becomes one update
                else:
                    yield ": keepalive\n\n"

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(changes(), media_type="text/event-stream", headers=headers)

    async def script(request: Request) -> Response:
        return Response(SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    return [
        Route("/", runs_page, methods=["GET"]),
        Route("/runs/{run_id}", run_page, methods=["GET"]),
        Route("/events", events_page, methods=["GET"]),
        Route("/schedules", schedules_page, methods=["GET"]),
        Route("/login", login_page, methods=["GET", "POST"]),
        Route("/api/stream", stream, methods=["GET"]),
        Route("/static/dashboard.js", script, methods=["GET"]),
    ]


def _run_detail(status: StatusResult, tree: list[tuple[int, Run]]) -> str:
    run = status.run
    actions = ""
    if not run.status.terminal:
        actions += f"<button data-post='/api/runs/{run.run_id}/cancel' data-confirm='Cancel this run?'>Cancel</button>"
    if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
        actions += f"<button data-post='/api/runs/{run.run_id}/retry'>Retry</button>"
    facts = [
        ("Status", _badge(run.status)),
        ("Id", f"<span class='mono'>{run.run_id}</span>"),
        ("Key", escape(run.key or "")),
        ("Parent", f"<a href='/runs/{run.parent_run_id}'>{run.parent_run_id}</a>" if run.parent_run_id else ""),
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
            f"<tr><td style='padding-left:{1 + depth * 1.5}em'><a href='/runs/{c.run_id}'>{escape(c.name)}</a></td>"
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
    error = f"<p class='error'>{escape(message)}</p>" if message else ""
    body = (
        f"{error}<form method='post' action='/login' class='login'>"
        "<label>Token <input type='password' name='token' autofocus required></label>"
        "<button>Sign in</button></form>"
        "<p class='muted'>The token is in the state directory; <code>mcp-orchestrator token</code> prints it.</p>"
    )
    return _page("Sign in", body, status=status, nav=False)


def _page(title: str, body: str, status: int = 200, nav: bool = True) -> HTMLResponse:
    links = (
        "<nav><a href='/'>Runs</a><a href='/events'>Events</a><a href='/schedules'>Schedules</a>"
        f"<span class='muted'>mcp-orchestrator {__version__}</span></nav>"
        if nav
        else ""
    )
    return HTMLResponse(
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)} · mcp-orchestrator"
        f"</title><meta name='viewport' content='width=device-width'><style>{STYLE}</style>"
        f"<script src='/static/dashboard.js' defer></script></head><body>{links}"
        f"<main><h1>{escape(title)}</h1>{body}</main></body></html>",
        status_code=status,
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


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
nav{display:flex;gap:1.2em;align-items:center;padding:.7em 1.5em;background:#1d2330}
nav a{color:#fff;text-decoration:none;font-weight:600}nav span{margin-left:auto;color:#9aa3b5}
main{padding:1em 1.5em;max-width:1200px}h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;width:100%;background:#fff}th,td{text-align:left;padding:.35em .6em;
border-bottom:1px solid #e3e6eb;vertical-align:top}th{font-weight:600;background:#eef0f4}
.mono,pre{font-family:ui-monospace,monospace;font-size:12px}.muted{color:#6b7385}
pre{white-space:pre-wrap;margin:0}pre.log{background:#1d2330;color:#e6e9ef;padding:.6em;max-height:20em;overflow:auto}
.badge{padding:.1em .5em;border-radius:.8em;font-size:12px;background:#e3e6eb}
.badge.running,.badge.started{background:#d7e8ff}.badge.waiting,.badge.queued,.badge.retrying{background:#fff1c2}
.badge.completed{background:#d5f2dc}.badge.failed{background:#ffd9d6}.badge.cancelled{background:#e8e2f5}
.label{background:#eef0f4;padding:0 .4em;border-radius:.3em;font-size:12px}
dl{display:grid;grid-template-columns:8em 1fr;gap:.3em 1em}dt{color:#6b7385}dd{margin:0}
.filters,.send-event,.actions,.login{display:flex;gap:.5em;flex-wrap:wrap;align-items:center;margin:.6em 0}
input{padding:.3em .5em;border:1px solid #c9ced8;border-radius:.3em}
button{padding:.3em .8em;border:0;border-radius:.3em;background:#2f5bd3;color:#fff;cursor:pointer}
.error{color:#b42318;font-weight:600}#notice{position:fixed;bottom:1em;right:1em;background:#1d2330;color:#fff;
padding:.5em 1em;border-radius:.3em;display:none}
"""

SCRIPT = """
// Live updates: the server says when the store changed; the page fetches itself and swaps <main>.
(function () {
  function notice(text) {
    var box = document.getElementById('notice');
    if (!box) { box = document.createElement('div'); box.id = 'notice'; document.body.appendChild(box); }
    box.textContent = text; box.style.display = 'block';
    setTimeout(function () { box.style.display = 'none'; }, 4000);
  }
  function refresh() {
    if (document.activeElement && document.activeElement.tagName === 'INPUT') return;  // do not eat typing
    fetch(location.href, {credentials: 'same-origin'}).then(function (r) { return r.text(); }).then(function (html) {
      var fresh = new DOMParser().parseFromString(html, 'text/html').querySelector('main');
      if (fresh) document.querySelector('main').replaceWith(fresh);
    });
  }
  function post(url, body) {
    return fetch(url, {method: 'POST', credentials: 'same-origin', headers: {'Content-Type': 'application/json'},
                       body: JSON.stringify(body || {})}).then(function (r) {
      return r.json().then(function (answer) {
        if (!r.ok) throw new Error(answer.message || r.statusText);
        return answer;
      });
    });
  }
  document.addEventListener('click', function (e) {
    var button = e.target.closest('button[data-post]');
    if (!button) return;
    if (button.dataset.confirm && !confirm(button.dataset.confirm)) return;
    post(button.dataset.post).then(function () { notice('Done'); refresh(); }, function (err) { notice(err.message); });
  });
  document.addEventListener('submit', function (e) {
    var form = e.target.closest('form[data-send-event]');
    if (!form) return;
    e.preventDefault();
    var data = null, raw = form.elements.data.value.trim();
    try { data = raw ? JSON.parse(raw) : null; } catch (err) { notice('data is not JSON: ' + err.message); return; }
    post('/events', {name: form.elements.name.value, data: data}).then(function (answer) {
      notice('Sent; woke ' + (answer.woken_run_ids.length || 'no') + ' run(s)'); refresh();
    }, function (err) { notice(err.message); });
  });
  if (window.EventSource && document.querySelector('nav')) {
    new EventSource('/api/stream').onmessage = refresh;
  }
})();
"""
