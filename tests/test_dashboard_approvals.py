"""The dashboard's approvals inbox: sub-agents' permission requests, decided by a person from a page.

Over HTTP as a signed-in browser would send it (cookie, Origin, CSRF token, JSON), and once in a
real headless Chromium, clicking the buttons.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from playwright.async_api import async_playwright

from mcp_orchestrator.models import (
    Approval,
    ListApprovalsInput,
    PermissionPromptInput,
    StartRunInput,
)
from mcp_orchestrator.runtime import Engine

from .dashboard_fixtures import *  # noqa: F403 (its fixtures: db, engine, artifacts)
from .support import chromium, http_token

pytestmark = [pytest.mark.anyio, pytest.mark.processes]

COOKIE = "mcp_orchestrator_session"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"


async def ask(engine: Engine, run_id: str, tool: str = "Bash", **value: Any) -> None:
    answer = await engine.approvals.request(PermissionPromptInput(tool_name=tool, input=value, run_id=run_id))
    assert answer.behavior == "deny" and "end this session now" in (answer.message or "")  # pending


async def approvals(engine: Engine, status: str = "pending") -> list[Approval]:
    return (await engine.approvals.list(ListApprovalsInput.model_validate({"status": status}))).approvals


async def signed_in(client: httpx2.AsyncClient, base: str, state_dir: Path) -> dict[str, str]:
    """Sign in through the form as a browser does; the cookie header to send."""
    response = await client.post(
        f"{base}/login", data={"token": http_token(state_dir)}, headers={"Origin": base}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    cookie = response.cookies.get(COOKIE)
    client.cookies.clear()  # each request sends the cookie it means to, by hand
    return {"Cookie": f"{COOKIE}={cookie}"}


def csrf_in(page: str) -> str:
    found = re.search(r"<meta name='csrf-token' content='([^']+)'>", page)
    assert found, "the page carries no CSRF token"
    return found.group(1)


async def test_a_person_approves_a_request_from_the_inbox_and_a_forged_post_decides_nothing(
    engine: Engine, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    base = http_server()
    run_id = (await engine.runs.start_run(StartRunInput(name="asks"))).run.run_id
    await ask(engine, run_id, command="npm install left-pad")
    (request,) = await approvals(engine)
    async with httpx2.AsyncClient(timeout=30) as client:
        jar = await signed_in(client, base, private_state_dir)
        page = await client.get(f"{base}/approvals", headers=jar)
        assert page.status_code == 200 and "<a href='/approvals'>Approvals</a>" in page.text
        assert "npm install left-pad" in page.text and f"<a href='/runs/{run_id}'>" in page.text
        action = f"/approvals/{request.approval_id}/decision"
        assert f"data-post='{action}'" in page.text and f"data-deny='{action}'" in page.text
        assert request.suggested_rule and html.escape(request.suggested_rule, quote=False) in page.text
        csrf = csrf_in(page.text)

        json_body = {"Content-Type": "application/json"}
        for headers in (
            {**jar, **json_body, "Origin": base},  # no CSRF token
            {**jar, **json_body, "Origin": base, "X-CSRF-Token": "guess"},
            {**jar, **json_body, "X-CSRF-Token": csrf},  # no Origin
            {**jar, "Content-Type": "text/plain", "Origin": base, "X-CSRF-Token": csrf},  # a form or no-cors fetch
        ):
            refused = await client.post(f"{base}{action}", content=b'{"behavior": "allow"}', headers=headers)
            assert refused.status_code in (403, 415), (headers, refused.text)
        assert [a.approval_id for a in await approvals(engine)] == [request.approval_id]  # still pending

        decided = await client.post(
            f"{base}{action}", json={"behavior": "allow"}, headers={**jar, "Origin": base, "X-CSRF-Token": csrf}
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["approval"]["status"] == "allowed"
        again = await client.post(
            f"{base}{action}", json={"behavior": "deny"}, headers={**jar, "Origin": base, "X-CSRF-Token": csrf}
        )
        assert again.status_code == 409 and "decided already" in again.json()["message"], again.text
        page = await client.get(f"{base}/approvals", headers=jar)
    assert await approvals(engine) == []
    (done,) = await approvals(engine, "decided")
    assert done.status == "allowed" and done.decision is not None
    assert (done.decision.by, done.decision.source, done.decision.scope) == ("person", "dashboard", "call")
    assert "No request waits for a decision." in page.text and "dashboard" in page.text


async def test_a_hostile_input_is_shown_escaped_and_cut_and_the_rule_button_allows_only_the_suggested_rule(
    engine: Engine, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    base = http_server()
    run_id = (await engine.runs.start_run(StartRunInput(name="hostile"))).run.run_id
    script = "<script>alert(1)</script>"
    await ask(engine, run_id, command=f"echo '{script}' && cat x", content=script + "A" * 2_000_000)
    (request,) = await approvals(engine)
    assert request.truncated and request.suggested_rule
    async with httpx2.AsyncClient(timeout=30) as client:
        jar = await signed_in(client, base, private_state_dir)
        for path in ("/approvals", f"/runs/{run_id}"):
            page = await client.get(f"{base}{path}", headers=jar)
            assert page.status_code == 200
            assert "<script>alert" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
            assert len(page.text) < 60_000, len(page.text)  # the input is cut, not the page's whole size
            assert "(a preview: the input is larger)" in page.text
            bodies = re.findall(r"data-body='([^']*)'", page.text)
            rule_bodies = [html.unescape(body) for body in bodies if "rule" in body]
            assert len(rule_bodies) == 1, bodies
        csrf = csrf_in(page.text)
        sent = json.loads(rule_bodies[0])
        assert sent == {"behavior": "allow", "scope": "rule", "rule": request.suggested_rule}  # never wider
        action = f"{base}/approvals/{request.approval_id}/decision"
        decided = await client.post(action, json=sent, headers={**jar, "Origin": base, "X-CSRF-Token": csrf})
        assert decided.status_code == 200, decided.text
    (done,) = await approvals(engine, "decided")
    assert done.decision is not None and (done.decision.scope, done.decision.rule) == ("rule", request.suggested_rule)


async def test_in_a_browser_requests_appear_live_and_the_buttons_decide_them(
    engine: Engine, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    base = http_server()
    run_id = (await engine.runs.start_run(StartRunInput(name="asks-twice"))).run.run_id
    problems: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = await browser.new_page()
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("dialog", lambda dialog: dialog.accept())
        await page.goto(f"{base}/login")
        await page.fill("input[name=token]", http_token(private_state_dir))
        await page.click("button:has-text('Sign in')")
        await page.wait_for_selector("h1:has-text('Runs')")
        await page.click("nav a:has-text('Approvals')")
        await page.wait_for_selector("text=No request waits for a decision.")

        await ask(engine, run_id, command="npm install left-pad")
        await page.wait_for_selector("text=npm install left-pad", timeout=10_000)  # no reload: the stream said so
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "approvals.png", full_page=True)
        await page.click("button:has-text('Approve')")
        await page.wait_for_selector("text=No request waits for a decision.", timeout=10_000)
        assert await page.is_visible("td .badge.allowed")

        await ask(engine, run_id, command="curl example.org")
        await page.goto(f"{base}/runs/{run_id}")
        await page.wait_for_selector("h2:has-text('Permission requests')")
        await page.fill("form[data-deny] input[name=message]", "no network, please")
        await page.click("form[data-deny] button:has-text('Deny')")
        await page.wait_for_selector("h2:has-text('Permission requests')", state="detached", timeout=10_000)
        await browser.close()
    assert problems == []
    decided = {a.decision.message: a for a in await approvals(engine, "decided") if a.decision is not None}
    assert decided["no network, please"].status == "denied"
    assert decided[None].status == "allowed" and decided[None].decision is not None
    assert {(a.decision.by, a.decision.source) for a in decided.values() if a.decision} == {("person", "dashboard")}
