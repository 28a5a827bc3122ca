"""The dashboard in a real headless browser (the system's Chromium, driven by Playwright)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

from mcp_orchestrator.models import (
    CheckpointInput,
    RunStatus,
    StartRunInput,
    StatusInput,
    WaitForEventInput,
)
from mcp_orchestrator.runtime import Engine

from .support import chromium, http_token

pytestmark = [pytest.mark.anyio, pytest.mark.processes]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"


@pytest.fixture
def db(db_path: Path) -> str:
    """SQLite only: a browser is slow to drive, and the dashboard reads the store through the engine."""
    return str(db_path)


async def run_status(engine: Engine, run_id: str) -> RunStatus:
    return (await engine.runs.status(StatusInput(run_id=run_id))).run.status


async def test_the_dashboard_shows_runs_and_steers_them(
    engine: Engine, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    base = http_server()
    review = (await engine.runs.start_run(StartRunInput(name="review-pr-42", labels={"repo": "api"}))).run.run_id
    await engine.runs.checkpoint(CheckpointInput(run_id=review, step="fetch-diff", output={"files": 3}))
    approval = WaitForEventInput(run_id=review, step="approval", event="approval", match={"data.pr": 42}, block_s=0)
    await engine.events.wait_for_event(approval)
    job = (await engine.runs.start_run(StartRunInput(name="long-job"))).run.run_id
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page: Page = await browser.new_page()
        page.on("dialog", lambda dialog: dialog.accept())

        await page.goto(f"{base}/")
        assert page.url == f"{base}/login"  # no token, no dashboard
        await page.fill("input[name=token]", "not-the-token")
        await page.click("button:has-text('Sign in')")
        await page.wait_for_selector("text=That is not the token")
        await page.fill("input[name=token]", http_token(private_state_dir))
        await page.click("button:has-text('Sign in')")
        await page.wait_for_selector("text=review-pr-42")
        assert await page.is_visible("text=long-job")
        await page.screenshot(path=ARTIFACTS / "runs.png", full_page=True)

        await engine.runs.start_run(StartRunInput(name="appears-live"))
        await page.wait_for_selector("text=appears-live", timeout=10_000)  # no reload: the stream said so

        await page.click("text=review-pr-42")
        await page.wait_for_selector("h2:has-text('Waiting for')")
        assert await page.is_visible("text=fetch-diff")
        data = page.locator("form[data-send-event] input[name=data]")
        assert await data.input_value() == '{"pr": 42}'  # prefilled from the wait's match
        await data.fill('{"pr": 42, "approved": true}')
        await page.click("button:has-text('Send event')")
        await page.wait_for_selector("li.moment.event:has-text('approval')", timeout=10_000)
        assert await run_status(engine, review) == RunStatus.RUNNING
        step = (await engine.runs.status(StatusInput(run_id=review))).steps[-1]
        assert step.step == "approval" and step.output["event"]["data"] == {"pr": 42, "approved": True}
        await page.screenshot(path=ARTIFACTS / "run.png", full_page=True)

        await page.goto(f"{base}/runs/{job}")
        await page.click("button:has-text('Cancel')")
        await page.wait_for_selector(".badge.cancelled", timeout=10_000)
        assert await run_status(engine, job) == RunStatus.CANCELLED
        await page.click("button:has-text('Retry')")
        await page.wait_for_selector("dd .badge.running", timeout=10_000)
        assert await run_status(engine, job) == RunStatus.RUNNING

        for path in ("/events", "/schedules"):
            response = await page.goto(f"{base}{path}")
            assert response is not None and response.status == 200
        assert await page.is_visible("text=No schedules.")
        await browser.close()
