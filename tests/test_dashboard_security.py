"""The dashboard against hostile pages and its own limits, in a real headless Chromium and over HTTP.

A page the user visits on another port of 127.0.0.1 is same-site with the dashboard, so the
browser sends the sign-in cookie along: only the dashboard's own pages may change anything.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from playwright.async_api import Browser, Page, async_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from mcp_orchestrator.models import ListSchedulesInput, RunStatus, ScheduleInput, StartRunInput, StatusInput
from mcp_orchestrator.runtime import Engine

from .support import chromium, eventually, http_token, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.processes]


@pytest.fixture
def db(db_path: Path) -> str:
    """SQLite only: a browser is slow to drive, and the dashboard reads the store through the engine."""
    return str(db_path)


@asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium(),
            args=["--no-sandbox"],
            ignore_default_args=["--disable-back-forward-cache"],  # a person's browser keeps pages there
        )
        try:
            yield launched
        finally:
            await launched.close()


async def sign_in(page: Page, base: str, state_dir: Path) -> None:
    await page.goto(f"{base}/login")
    await page.fill("input[name=token]", http_token(state_dir))
    await page.click("button:has-text('Sign in')")
    await page.wait_for_selector("h1:has-text('Runs')")


async def test_a_tab_loads_its_eighth_page_while_earlier_ones_sit_in_the_back_forward_cache(
    engine: Engine, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    """Each page's live stream closes when the page is hidden: a tab never runs out of connections."""
    base = http_server()
    runs = [(await engine.runs.start_run(StartRunInput(name=f"job-{i}"))).run.run_id for i in range(4)]
    async with browser() as chrome:
        page = await chrome.new_page()
        await sign_in(page, base, private_state_dir)
        for run_id in runs:  # links followed in one tab: each page left behind goes to the cache
            await page.click(f"a[href='/runs/{run_id}']")
            await page.wait_for_selector(f"dd:has-text('{run_id}')", timeout=8_000)
            await page.click("nav a:has-text('Runs')")
            await page.wait_for_selector("h1:has-text('Runs')", timeout=8_000)


async def test_pages_send_security_headers_and_break_no_content_security_rule(
    engine: Engine, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    """Every page forbids framing, sniffing and referrers, and runs under a CSP without inline code or style."""
    base = http_server()
    parent = (await engine.runs.start_run(StartRunInput(name="parent"))).run.run_id
    await engine.runs.start_run(StartRunInput(name="child", parent_run_id=parent))  # indented in the tree
    await engine.schedules.schedule(
        ScheduleInput(name="nightly", every_s=3600, action={"type": "send_event", "name": "tick"})
    )
    problems: list[str] = []
    async with browser() as chrome:
        page = await chrome.new_page()
        page.on("console", lambda m: problems.append(f"{m.location['url']}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("dialog", lambda dialog: dialog.accept())
        await sign_in(page, base, private_state_dir)
        for path in ("/", f"/runs/{parent}", "/events", "/schedules", "/approvals", "/runs/no-such-run"):
            response = await page.goto(f"{base}{path}")
            assert response is not None
            headers = await response.all_headers()
            csp = headers.get("content-security-policy", "")
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
            assert "unsafe-inline" not in csp
            assert headers.get("x-frame-options") == "DENY"
            assert headers.get("x-content-type-options") == "nosniff"
            assert headers.get("referrer-policy") == "same-origin"  # no-referrer would make POSTs "Origin: null"
            content = await page.content()
            assert "<style" not in content and " style=" not in content
        await page.goto(f"{base}/runs/{parent}")
        assert await page.locator("ul.tree .node.here .node >> text=child").count() == 1
        await engine.runs.start_run(StartRunInput(name="grandchild-appears-live", parent_run_id=parent))
        await page.wait_for_selector("text=grandchild-appears-live", timeout=10_000)
        await page.click("button:has-text('Cancel')")  # a POST with the CSRF token, the notice shown
        await page.wait_for_selector("#notice.shown", timeout=10_000)
    assert [p for p in problems if "/runs/no-such-run" not in p] == []  # a 404 page logs its own status


async def test_the_dashboards_own_buttons_send_the_csrf_token(
    engine: Engine, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    base = http_server()
    run_id = (await engine.runs.start_run(StartRunInput(name="to-cancel"))).run.run_id
    async with browser() as chrome:
        page = await chrome.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        await sign_in(page, base, private_state_dir)
        await page.goto(f"{base}/runs/{run_id}")
        token = await page.get_attribute("meta[name=csrf-token]", "content")
        assert token, "the page carries no CSRF token"
        async with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/cancel")) as sent:
            await page.click("button:has-text('Cancel')")
        request = await sent.value
        assert request.headers.get("x-csrf-token") == token
        assert request.headers.get("content-type") == "application/json"
        await page.wait_for_selector(".badge.cancelled", timeout=10_000)
    assert (await engine.runs.status(StatusInput(run_id=run_id))).run.status == RunStatus.CANCELLED


@asynccontextmanager
async def attacker_site(html: str) -> AsyncIterator[str]:
    """A page on another port of 127.0.0.1: same-site with the dashboard, so its cookie goes along."""
    import uvicorn

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(html)

    app = Starlette(routes=[Route("/", home)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/"
    finally:
        server.should_exit = True
        await task


async def test_a_page_on_another_port_cannot_send_events_or_cancel_runs(
    engine: Engine, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    base = http_server()
    run_id = (await engine.runs.start_run(StartRunInput(name="victim"))).run.run_id
    hostile = f"""<!doctype html><html><body>
<form id="cancel" method="post" action="{base}/api/runs/{run_id}/cancel" enctype="text/plain" target="sink">
<input name='{{"reason": "csrf' value='"}}'></form><iframe name="sink"></iframe>
<script>
fetch("{base}/events", {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{name: "approval", data: {{pr: 42}}}})}});
document.getElementById("cancel").submit();
</script></body></html>"""
    async with browser() as chrome, attacker_site(hostile) as evil:
        page = await chrome.new_page()
        await sign_in(page, base, private_state_dir)
        async with (
            page.expect_response(lambda r: r.url == f"{base}/events") as fetched,
            page.expect_response(lambda r: r.url.endswith(f"/api/runs/{run_id}/cancel")) as posted,
        ):
            await page.goto(evil)
        answers = [await fetched.value, await posted.value]  # both reached the server, which said no
        assert all(answer.status == 403 for answer in answers), [answer.status for answer in answers]
    headers = {"Authorization": f"Bearer {http_token(private_state_dir)}"}
    async with httpx2.AsyncClient(base_url=base, headers=headers) as api:
        events = (await api.get("/api/events", params={"name": "approval"})).json()["events"]
        run = (await api.get(f"/api/runs/{run_id}")).json()["run"]
    assert events == [] and run["status"] == "running"


async def rename_schedule(engine: Engine, old: str, new: str) -> None:
    """Give a stored schedule a name the models no longer accept (one stored by an older release)."""

    def rename(tx: Any) -> None:
        schedule = tx.get_schedule(old)
        tx.delete_schedule(old)
        tx.save_schedule(schedule.model_copy(update={"name": new}))

    await engine.store.write(rename)


async def test_a_schedules_pause_button_stays_inside_its_own_path_segment(
    engine: Engine, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    base = http_server()
    run_id = (await engine.runs.start_run(StartRunInput(name="bystander"))).run.run_id
    action = {"type": "send_event", "name": "tick"}
    await engine.schedules.schedule(ScheduleInput(name="hostile", every_s=3600, action=action))
    await rename_schedule(engine, "hostile", f"../runs/{run_id}/cancel#")
    async with browser() as chrome:
        page = await chrome.new_page()
        await sign_in(page, base, private_state_dir)
        await page.goto(f"{base}/schedules")
        button = page.locator("button:has-text('Pause')")
        assert await button.get_attribute("data-post") == f"/api/schedules/..%2Fruns%2F{run_id}%2Fcancel%23/pause"
        async with page.expect_response(lambda r: "/pause" in r.url) as answered:
            await button.click()
        assert not (await answered.value).url.endswith("/cancel") and (await answered.value).ok
    assert (await engine.runs.status(StatusInput(run_id=run_id))).run.status == RunStatus.RUNNING
    (paused,) = (await engine.schedules.list(ListSchedulesInput())).schedules
    assert paused.name == f"../runs/{run_id}/cancel#" and not paused.enabled  # the button paused its own schedule


async def test_a_run_id_the_models_refuse_gets_a_page_that_says_why(
    http_server: Callable[..., str], private_state_dir: Path
) -> None:
    base = http_server()
    headers = {"Authorization": f"Bearer {http_token(private_state_dir)}"}
    async with httpx2.AsyncClient(base_url=base, headers=headers) as client:
        too_long = await client.get(f"/runs/{'A' * 65}")
        unknown = await client.get("/runs/NO-SUCH-RUN")
    assert too_long.status_code == 400 and too_long.headers["content-type"].startswith("text/html")
    assert "run_id" in too_long.text and "at most 64 characters" in too_long.text
    assert too_long.headers["x-frame-options"] == "DENY"
    assert unknown.status_code == 404 and "No run has the id NO-SUCH-RUN" in unknown.text


async def test_serve_on_a_terminal_prints_a_sign_in_link_whose_token_never_leaves_the_browser(
    db: str, private_state_dir: Path
) -> None:
    """A person who started ``serve --http`` in a terminal opens the printed link and is signed in; the
    token rides in the fragment (never sent to the server), and the page drops it from the address bar.
    Started by a service (stderr not a terminal), the link is not printed: no log holds the token."""
    command = [sys.executable, "-m", "mcp_orchestrator", "serve", "--http", "127.0.0.1:0", "--db", db]
    controller, terminal = os.openpty()
    server = subprocess.Popen(command, stderr=terminal, stdout=subprocess.DEVNULL, env=server_env())
    os.close(terminal)
    printed = bytearray()
    try:
        while b"dashboard: " not in printed or not printed.endswith(b"\n"):
            chunk = await asyncio.to_thread(os.read, controller, 4096)
            assert chunk, f"the server printed no sign-in link: {printed!r}"
            printed += chunk
        link = re.search(rb"dashboard: (\S+)", printed).group(1).decode()  # type: ignore[union-attr]
        assert link.endswith(f"/login#token={http_token(private_state_dir)}")
        seen: list[str] = []
        async with browser() as chrome:
            page = await chrome.new_page()
            page.on("request", lambda request: seen.append(request.url + " " + (request.post_data or "")))
            await page.goto(link)
            await page.wait_for_selector("h1:has-text('Runs')")
            assert "token" not in page.url and page.url.endswith("/")
            await page.go_back()  # the history entry holds no token either
            assert "#token" not in page.url
        # Only the sign-in form's POST carried the token; no URL did.
        assert [entry for entry in seen if http_token(private_state_dir) in entry.split(" ")[0]] == []
    finally:
        server.terminate()
        server.wait(timeout=10)
        os.close(controller)
    piped = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=server_env(), text=True)
    assert piped.stderr is not None
    announced = ""
    while "MCP at " not in announced:
        line = piped.stderr.readline()
        assert line, f"the server did not start: {announced}"
        announced += line
    piped.terminate()
    rest = piped.communicate(timeout=10)[1]
    assert "dashboard: " not in announced + rest and http_token(private_state_dir) not in announced + rest
