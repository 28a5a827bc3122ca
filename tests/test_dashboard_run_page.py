"""The run page in a real headless Chromium: the timeline as a waterfall (steps, a failed attempt, a wait, the
event that ended it, child runs, a sub-agent's process, activity, permission request and message), values
shown whole and folded, copied, kept open across live updates; the run's tree; the look of a destructive
action; a log that opens at its newest line; and a phone-sized window that never scrolls sideways.

Screenshots (desktop and phone) go to ``MCP_ORCHESTRATOR_ARTIFACTS`` if set, else to the test's tmp dir.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from playwright.async_api import Page
from starlette.applications import Starlette

from mcp_orchestrator.models import (
    Activity,
    CheckpointInput,
    DecideApprovalInput,
    FinishRunInput,
    ListApprovalsInput,
    PermissionPromptInput,
    RunStatus,
    SendEventInput,
    SendMessageInput,
    SpawnSubagentInput,
    StartRunInput,
    StatusInput,
    WaitForEventInput,
)
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.services.runs import TREE_WIDTH
from mcp_orchestrator.web import timeline
from mcp_orchestrator.web.dashboard import dashboard_routes
from mcp_orchestrator.web.timeline import TIMELINE_SHOWN, TREE_NODES, json_value

from .dashboard_fixtures import *  # noqa: F403 (its fixtures: db, engine, artifacts)
from .support import Clock, dashboard_page, http_token, no_sideways_scroll

pytestmark = pytest.mark.anyio

NOTES = [f"note {n}: {'a long line of release notes ' * 3}" for n in range(80)]  # folded, never cut
DIFF = {"files": ["parser.py", "lexer.py"], "lines": {"added": 42, "removed": 7}}


def now() -> datetime:
    return datetime.now(UTC)


async def release(engine: Engine, tmp_path: Path) -> dict[str, str]:
    """A run 'release' with steps (one failed once), a wait ended by an event, a child run, and a sub-agent
    'fix-tests' that worked (activity, a permission request decided, a message, logs), has a child of its
    own and completed. 'release' goes on. Returns the run ids by name."""
    runs = engine.runs
    parent = (await runs.start_run(StartRunInput(name="release", input={"version": "2.0", "notes": NOTES}))).run.run_id
    await runs.checkpoint(CheckpointInput(run_id=parent, step="fetch-diff", output=DIFF))
    await runs.checkpoint(CheckpointInput(run_id=parent, step="flaky", error="connection reset"))
    await runs.checkpoint(CheckpointInput(run_id=parent, step="flaky", output={"tries": 2}))
    await engine.events.wait_for_event(WaitForEventInput(run_id=parent, step="ci", event="ci.finished", block_s=0))
    await engine.events.send_event(SendEventInput(name="ci.finished", data={"ok": True, "build": 7}))
    lint = (await runs.start_run(StartRunInput(name="lint-docs", parent_run_id=parent))).run.run_id
    await runs.finish_run(FinishRunInput(run_id=lint, output="clean"))

    spawn = SpawnSubagentInput.model_validate(
        {
            "prompt": "Fix the flaky parser test.\nKeep the change small.",
            "agent": "command",
            "command": ["true"],
            "cwd": str(tmp_path),
            "name": "fix-tests",
            "parent_run_id": parent,
        }
    )
    agent = (await engine.subagents.spawn(spawn)).run.run_id
    (launch,) = await engine.subagents.claim()
    attempt = launch.agent.attempt
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "stdout.log").write_text("".join(f"line {n}\n" for n in range(1, 41)))
    verdict = await engine.subagents.started(
        agent, attempt, pid=4242, pgid=4243, host="elsewhere", at=now(), log_dir=str(logs)
    )
    assert verdict == "continue"
    said = Activity(at=now(), kind="text", summary="The parser drops the last token.")
    call = Activity(
        at=now(), kind="tool", summary="Bash: pytest -q", tool="Bash", ref="t1", failed=False, duration_ms=900
    )
    await engine.subagents.report(agent, attempt, activity=[said, call])
    asked = PermissionPromptInput(tool_name="Bash", input={"command": "npm install left-pad"}, run_id=agent)
    assert (await engine.approvals.request(asked)).behavior == "deny"  # pending: decided below
    (pending,) = (await engine.approvals.list(_pending(agent))).approvals
    allow = DecideApprovalInput(approval_id=pending.approval_id, behavior="allow")
    await engine.approvals.decide(allow, by="person", source="test")
    told = SendMessageInput(run_id=agent, text="Mind the lexer too.")
    message = (await engine.messages.send(told, source="dashboard")).message
    check = (await runs.start_run(StartRunInput(name="sub-check", parent_run_id=agent))).run.run_id
    await runs.finish_run(FinishRunInput(run_id=check, output={"passed": 12}))
    await runs.finish_run(FinishRunInput(run_id=agent, output="fixed"))  # the agent ends its run itself
    await engine.subagents.exited(agent, attempt, 0, delivered=[message.message_id])
    assert (await engine.runs.status(StatusInput(run_id=agent))).run.status == RunStatus.COMPLETED
    return {"release": parent, "lint-docs": lint, "fix-tests": agent, "sub-check": check}


async def runs_under(engine: Engine, parent: str, name: str) -> str:
    return (await engine.runs.start_run(StartRunInput(name=name, parent_run_id=parent))).run.run_id


async def page_of(engine: Engine, run_id: str) -> str:
    """A run's page as the server renders it, without a browser."""
    app = Starlette(routes=dashboard_routes(engine, None))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://page") as client:
        return (await client.get(f"/runs/{run_id}")).text


def _pending(run_id: str) -> ListApprovalsInput:
    return ListApprovalsInput(run_id=run_id, status="pending")


async def moments(page: Page) -> list[tuple[str, str]]:
    """The timeline's entries as (kind, what), top to bottom."""
    rows = await page.locator("li.moment").evaluate_all(
        "rows => rows.map(r => [r.querySelector('.m-kind').textContent, r.querySelector('.m-what').textContent])"
    )
    return [(kind.split(" #")[0], what) for kind, what in rows]


def subsequence(wanted: list[Any], seen: list[Any]) -> bool:
    found = iter(seen)
    return all(any(item == got for got in found) for item in wanted)


@pytest.mark.processes
async def test_the_run_page_tells_the_whole_story_on_one_time_axis(
    engine: Engine, tmp_path: Path, http_server: Callable[..., str], private_state_dir: Path, artifacts: Path
) -> None:
    ids = await release(engine, tmp_path)
    base = http_server()
    problems: list[str] = []
    async with dashboard_page(base, http_token(private_state_dir), problems) as page:
        await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        await page.goto(f"{base}/runs/{ids['release']}")
        await page.wait_for_selector("h2:has-text('Timeline')")

        seen = await moments(page)
        wanted = [
            ("journal", "run created"),
            ("checkpoint", "fetch-diff completed"),
            ("attempt failed", "flaky"),
            ("event wait", "ci completed"),
            ("event", "ci.finished"),
            ("child run", "lint-docs completed"),
            ("child run", "fix-tests completed"),
        ]
        assert subsequence(wanted, seen), "\n".join(map(str, seen))  # in time, newest at the bottom
        assert ("checkpoint", "flaky completed") in seen
        assert await page.locator("li.moment.attempt-failed.failed").count() == 1
        widths = await page.locator("li.moment rect").evaluate_all("rects => rects.map(r => +r.getAttribute('width'))")
        assert all(0 < width <= 100 for width in widths) and max(widths) > 1  # the wait spans time

        # The run's input whole: folded (it is large), every note there once unfolded.
        folded = page.locator("details[data-key='run:input']")
        assert await folded.get_attribute("open") is None
        await folded.locator("summary").first.click()
        notes = folded.locator("details.j").first  # the notes, a fold of its own
        assert await notes.get_attribute("open") is None
        await notes.locator("summary").first.click()
        shown = await folded.inner_text()
        assert all(note.strip() in shown for note in NOTES), shown[-500:]

        # An entry opens to its output as foldable JSON, and copies it whole.
        entry = page.locator("details[data-key='step:fetch-diff']")
        await entry.locator("summary").first.click()
        values = entry.locator(".m-values")
        assert await values.is_visible() and "lexer.py" in await values.inner_text()
        nested = entry.locator("details.j").first  # 'files', open at first: a small value
        assert await nested.get_attribute("open") is not None
        await nested.locator("summary").click()
        assert await nested.get_attribute("open") is None
        await entry.locator("button.copy").click()
        await page.wait_for_selector("details[data-key='step:fetch-diff'] button.copy.copied")
        assert json.loads(await page.evaluate("navigator.clipboard.readText()")) == DIFF
        # The run's input, copied from the drawn tree (the page holds it once): the JSON text, to the byte.
        await page.locator(".io .value button.copy").first.click()
        await page.wait_for_selector(".io .value button.copy.copied")
        copied = await page.evaluate("navigator.clipboard.readText()")
        assert copied == json.dumps({"version": "2.0", "notes": NOTES}, indent=2, ensure_ascii=False)

        # A live update (a new step) swaps the page: what was opened stays open, what was folded stays folded.
        await engine.runs.checkpoint(CheckpointInput(run_id=ids["release"], step="after-open", output=1))
        await page.wait_for_selector("li.moment:has-text('after-open')", timeout=10_000)
        assert await page.locator("details[data-key='step:fetch-diff']").get_attribute("open") is not None
        assert await page.locator("details[data-key='run:input']").get_attribute("open") is not None
        assert await page.locator("details[data-key='step:fetch-diff'] details.j").first.get_attribute("open") is None
        assert (await moments(page))[-1] == ("checkpoint", "after-open completed")

        # The tree: this run, its children and the sub-agent's own child under it.
        tree = page.locator("ul.tree")
        assert await tree.locator(".node.here").first.inner_text() != ""
        assert await tree.locator(".node.here .node .node:has-text('sub-check')").count() == 1
        assert "lint-docs" in await tree.inner_text()

        # A destructive action does not look like the primary one.
        looks = await page.evaluate(
            """() => {
              const plain = document.createElement('button'); plain.textContent = 'x';
              document.querySelector('main').appendChild(plain);
              const danger = document.querySelector('button.danger');
              const style = (b) => { const s = getComputedStyle(b); return [s.backgroundColor, s.color]; };
              const found = [danger.textContent, style(danger), style(plain)];
              plain.remove();
              return found;
            }"""
        )
        assert looks[0] == "Cancel run" and looks[1] != looks[2], looks
        await page.screenshot(path=artifacts / "release-desktop.png", full_page=True)

        # The sub-agent's page: its prompt whole, its process, activity, permission request and message.
        await page.goto(f"{base}/runs/{ids['fix-tests']}")
        await page.wait_for_selector("h2:has-text('Prompt')")
        prompt = await page.locator(".io .value").first.inner_text()
        assert "Fix the flaky parser test.\nKeep the change small." in prompt
        kinds = [kind for kind, _ in await moments(page)]
        for kind in ("process", "text", "tool", "approval wait", "message", "child run"):
            assert kind in kinds, kinds
        approval = page.locator("li.moment.approval-wait")
        assert "npm install left-pad" in await approval.locator(".m-what").inner_text()
        await approval.locator("summary").first.click()
        assert '"allow"' in await approval.locator(".m-values").inner_text()
        assert "fixed" in await page.locator(".io").inner_text()  # its output
        tree = page.locator("ul.tree")
        assert await tree.locator("a:has-text('release')").count() == 1  # its ancestor, linked
        assert "fix-tests" in await tree.locator(".node.here").first.inner_text()
        log = await page.locator("pre.log").evaluate(
            "l => [l.scrollTop + l.clientHeight, l.scrollHeight, l.clientHeight]"
        )
        assert log[1] > log[2] and log[0] >= log[1] - 2, log  # scrolled: opened at its newest line
        await page.screenshot(path=artifacts / "subagent-desktop.png", full_page=True)

        # Live updates: at its newest line, the log follows the new lines; scrolled up, it stays, update after update.
        logged = tmp_path / "logs" / "stdout.log"
        for update in range(3):
            with logged.open("a") as out:
                out.write("".join(f"more {update}.{n}\n" for n in range(20)))
            await runs_under(engine, ids["fix-tests"], f"live-{update}")
            await page.wait_for_selector(f"ul.tree :text('live-{update}')", timeout=10_000)
            if update == 0:
                bottom = await page.locator("pre.log").evaluate("l => [l.scrollTop + l.clientHeight, l.scrollHeight]")
                assert bottom[0] >= bottom[1] - 2 and "more 0.19" in await page.inner_text("pre.log"), bottom
                await page.locator("pre.log").evaluate("l => { l.scrollTop = 0; }")  # a person scrolls to the top
                await page.wait_for_function("document.querySelector('pre.log').scrollTop === 0")
            else:
                assert await page.locator("pre.log").evaluate("l => l.scrollTop") == 0, f"update {update}"
    assert problems == []


@pytest.mark.processes
async def test_on_a_phone_nothing_scrolls_sideways(
    engine: Engine, tmp_path: Path, http_server: Callable[..., str], private_state_dir: Path, artifacts: Path
) -> None:
    ids = await release(engine, tmp_path)
    base = http_server()
    problems: list[str] = []
    async with dashboard_page(base, http_token(private_state_dir), problems, width=390, height=844) as page:
        assert await no_sideways_scroll(page) == 0  # the run list
        for name in ("release", "fix-tests"):
            await page.goto(f"{base}/runs/{ids[name]}")
            await page.wait_for_selector("h2:has-text('Timeline')")
            await page.locator("details[data-key='journal'] summary").click()  # its wide table, open
            await page.locator("li.moment summary").first.click()
            assert await no_sideways_scroll(page) == 0, name
            await page.screenshot(path=artifacts / f"{name}-phone.png", full_page=True)
        for path in ("/events", "/schedules", "/approvals"):
            await page.goto(f"{base}{path}")
            assert await no_sideways_scroll(page) == 0, path
    assert problems == []


# Without a browser: values drawn whole and escaped, and a live page that stays the same while nothing happens.


def test_a_value_is_escaped_whole_and_folded_when_large_never_cut() -> None:
    hostile = {"<script>alert(1)</script>": "' onmouseover='x", "list": list(range(3))}
    drawn = str(json_value(hostile, "step:x'/output"))
    assert "<script>" not in drawn and "&lt;script&gt;" in drawn and "' onmouseover" not in drawn
    assert "data-key='step:x&#x27;/output'" in drawn  # the key stays inside its attribute
    assert drawn.count("onmouseover") == 1 and "data-copy" not in drawn  # in the page once: copied from the tree

    big = {"notes": NOTES}
    folded = str(json_value(big, "run:input"))
    assert "<details class='fold' data-key='run:input'>" in folded  # folded: no 'open'
    assert all(html.escape(note, quote=True) in folded for note in NOTES)  # yet every note is there

    many = list(range(TREE_NODES + 10))  # too many nodes for a tree: indented JSON text, whole
    text = str(json_value(many, "run:output"))
    assert "<pre class='j-text'>" in text and f"{TREE_NODES + 9}\n]" in text and "data-copy" not in text


def test_a_deep_value_is_drawn_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large string nested deep is written out once, not once for every container above it."""
    deep: Any = "x" * 100_000
    for level in range(60):
        deep = {f"level{level}": deep}
    written = []
    dumps = timeline.json.dumps
    monkeypatch.setattr(timeline.json, "dumps", lambda value, **kw: written.append(out := dumps(value, **kw)) or out)
    drawn = str(json_value(deep, "run:input"))
    assert sum(map(len, written)) < 110_000  # the string once, and the keys
    assert drawn.count("x" * 100_000) == 1 and f"{len(dumps(deep, ensure_ascii=False)):,} characters" in drawn


async def test_a_running_runs_page_renders_the_same_until_something_happens(engine: Engine) -> None:
    """The axis ends at the last thing the store knows, not at the clock, so a live stream stays quiet."""
    clock = Clock()
    ticking = Engine(engine.store, workspace="/w", clock=clock)
    run_id = (await ticking.runs.start_run(StartRunInput(name="long"))).run.run_id
    await ticking.runs.checkpoint(CheckpointInput(run_id=run_id, step="begun", begin=True))
    app = Starlette(routes=dashboard_routes(ticking, None))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://page") as client:
        first = (await client.get(f"/runs/{run_id}")).text
        clock.advance(90)
        assert (await client.get(f"/runs/{run_id}")).text == first
        assert f"<time datetime='{clock.now - timedelta(seconds=90):%Y-%m-%dT%H:%M:%SZ}' data-elapsed>" in first
        await ticking.runs.checkpoint(CheckpointInput(run_id=run_id, step="begun", output={"done": True}))
        later = (await client.get(f"/runs/{run_id}")).text
    assert later != first and "+1 min 30 s" in later  # the step's end, on the axis


async def test_the_tree_shows_the_chain_above_and_says_where_it_cut_below(engine: Engine) -> None:
    chain = [(await engine.runs.start_run(StartRunInput(name="level-0"))).run.run_id]
    for level in range(1, 9):
        started = await engine.runs.start_run(StartRunInput(name=f"level-{level}", parent_run_id=chain[-1]))
        chain.append(started.run.run_id)
    app = Starlette(routes=dashboard_routes(engine, None))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://page") as client:
        middle = (await client.get(f"/runs/{chain[2]}")).text
        leaf = (await client.get(f"/runs/{chain[-1]}")).text
    tree = middle[middle.index("<ul class='tree'>") :]
    names = re.findall(r">(level-\d)<", tree)
    assert names == [f"level-{n}" for n in range(8)]  # two above, the run, five levels below: no more
    assert "<li class='node here'>" in tree and "<b>level-2</b>" in tree
    assert "at most 5 levels below this run" in tree
    assert "at most 5 levels" not in (await page_of(engine, chain[3]))  # exactly five below: all shown
    assert "at most 5 levels" not in leaf and re.findall(r">(level-\d)<", leaf[leaf.index("<ul class='tree'>") :]) == [
        f"level-{n}" for n in range(9)
    ]


async def test_the_tree_says_it_cut_only_when_a_run_has_more_children_than_it_shows(engine: Engine) -> None:
    wide = (await engine.runs.start_run(StartRunInput(name="wide"))).run.run_id
    children = [await runs_under(engine, wide, f"child-{n}") for n in range(TREE_WIDTH)]
    shown = await page_of(engine, wide)
    assert "The tree shows at most" not in shown and all(f"/runs/{child}'" in shown for child in children)
    newest = await runs_under(engine, wide, "one-more")
    cut = await page_of(engine, wide)
    tree = cut[cut.index("<ul class='tree'>") :]
    assert "The tree shows at most" in tree and f"/runs/{newest}'" in tree  # the newest shown, the oldest left
    assert f"/runs/{children[0]}'" not in tree


async def test_a_run_page_reads_its_children_without_payloads_and_says_what_it_left_out(engine: Engine) -> None:
    """A run with more children than the timeline shows: the page names what it did not read."""
    parent = (await engine.runs.start_run(StartRunInput(name="fan-out"))).run.run_id
    for n in range(TIMELINE_SHOWN + 5):
        await engine.runs.start_run(StartRunInput(name=f"shard-{n}", parent_run_id=parent, input={"secret": n}))
    page = await page_of(engine, parent)
    assert "older steps, journal entries, activity or child runs are not read" in page
    assert "secret" not in page and "shard-4<" not in page and f"shard-{TIMELINE_SHOWN + 4}<" in page
