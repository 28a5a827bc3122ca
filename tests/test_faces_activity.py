"""What sub-agents do and spend, and steering them, through every face: the MCP tools (send_message,
read_messages, set_budget, status), the CLI (logs --activity, message, budget, status, runs), the JSON
API and the dashboard (figures, timeline, message and budget forms; once in a headless Chromium).

Activity and spending get into a run the way a runner puts them there (``engine.subagents.report``),
on an agent claimed and started without a process; servers are started only once nothing is left for
their supervisor to claim.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client

from mcp_orchestrator.models import (
    Activity,
    CheckpointInput,
    FinishRunInput,
    RunStatus,
    SpawnSubagentInput,
    StartRunInput,
    StatusInput,
    StatusResult,
    Usage,
)
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.views import activity_line, cost, silence, spent, tokens

from .support import CONTRACT_TOOLS, call, cli, dashboard_page, http_token, open_store, server_env, stdio_server

pytestmark = pytest.mark.anyio

COOKIE = "mcp_orchestrator_session"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"


@pytest.fixture
async def engine(db: str, tmp_path: Path) -> AsyncIterator[Engine]:
    async with open_store(db) as store:
        yield Engine(store, workspace=str(tmp_path))


def now() -> datetime:
    return datetime.now(UTC)


def usage(cost_usd: float, turns: int = 3) -> Usage:
    return Usage(cost_usd=cost_usd, input_tokens=12_000, output_tokens=1_500, turns=turns, model="claude-x")


def tool_call(ref: str, summary: str, *, failed: bool | None = None, duration_ms: int | None = None) -> Activity:
    tool = summary.split(":")[0].split()[0]
    return Activity(at=now(), kind="tool", summary=summary, tool=tool, ref=ref, failed=failed, duration_ms=duration_ms)


async def working_agent(
    engine: Engine, tmp_path: Path, name: str = "fix-tests", *, at: datetime | None = None, **fields: Any
) -> tuple[str, int]:
    """A sub-agent claimed and started (as a runner on another host would), with no process: its run and
    attempt. Nothing else may be startable (the claim takes every startable agent)."""
    spawn = SpawnSubagentInput.model_validate(
        {"prompt": "fix the tests", "agent": "command", "command": ["true"], "cwd": str(tmp_path), "name": name}
        | fields
    )
    run_id = (await engine.subagents.spawn(spawn)).run.run_id
    (launch,) = await engine.subagents.claim()
    assert launch.agent.run_id == run_id
    verdict = await engine.subagents.started(
        run_id, launch.agent.attempt, pid=4242, pgid=4243, host="elsewhere", at=at or now(), log_dir="/nowhere"
    )
    assert verdict == "continue"
    return run_id, launch.agent.attempt


async def story(engine: Engine, tmp_path: Path) -> tuple[str, str, int]:
    """A parent run and its sub-agent 'fix-tests' (budget $0.05) that worked: a turn, a tool call (read
    running, then done), a checkpoint, a child run, words, a failed call, and spending past its budget.
    The sub-agent is still running; returns the parent, the sub-agent's run and its attempt."""
    parent = (await engine.runs.start_run(StartRunInput(name="release", max_budget_usd=1.0))).run.run_id
    run_id, attempt = await working_agent(engine, tmp_path, parent_run_id=parent, max_budget_usd=0.05)
    report = engine.subagents.report
    await report(run_id, attempt, activity=[Activity(at=now(), kind="turn", summary="turn 1")])
    await report(run_id, attempt, activity=[tool_call("t1", "Bash: npm test")])
    await report(run_id, attempt, activity=[tool_call("t1", "Bash: npm test", failed=False, duration_ms=5230)])
    await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="plan", output={"files": ["parser.py"]}))
    child = (await engine.runs.start_run(StartRunInput(name="lint-docs", parent_run_id=run_id))).run.run_id
    await engine.runs.finish_run(FinishRunInput(run_id=child, output="clean"))
    said = Activity(at=now(), kind="text", summary="The parser drops the last token; fixing it.")
    await report(run_id, attempt, activity=[said, tool_call("t2", "Edit parser.py", failed=True, duration_ms=40)])
    await report(run_id, attempt, usage=usage(0.03))
    return parent, run_id, attempt


async def pause_at_budget(engine: Engine, run_id: str, attempt: int) -> None:
    """The sub-agent spends past its budget and its runner stops it there: its run waits for a raise."""
    beat = await engine.subagents.report(run_id, attempt, usage=usage(0.06, turns=4))
    assert beat.verdict == "budget"
    await engine.subagents.exited(run_id, attempt, -15, how="budget", usage=usage(0.06, turns=4))
    paused = await engine.runs.status(StatusInput(run_id=run_id))
    assert paused.run.status == RunStatus.WAITING and [wait.kind for wait in paused.waits] == ["budget"]


async def status_of(engine: Engine, run_id: str, **fields: Any) -> StatusResult:
    return await engine.runs.status(StatusInput.model_validate({"run_id": run_id, **fields}))


# The shared words.


def test_the_faces_say_costs_tokens_and_silence_alike() -> None:
    assert (cost(0.0421), cost(12.5), cost(None)) == ("$0.0421", "$12.50", "-")
    assert (tokens(950), tokens(12_345), tokens(4_100_000)) == ("950", "12.3k", "4.1M")
    assert spent(None) == "-" and spent(Usage(input_tokens=2000)) == "2.0k tokens" and spent(usage(0.5)) == "$0.5000"
    assert (silence(42), silence(720), silence(7500)) == (
        "silent for 42 s",
        "silent for 12 min",
        "silent for 2 h 5 min",
    )
    entry = Activity(
        seq=7, attempt=2, at=datetime(2026, 1, 1, 9, tzinfo=UTC), kind="tool", summary="Bash: ls", tool="Bash"
    )
    assert activity_line(entry, terminal=True) == "2026-01-01 09:00:00Z  #2  tool       Bash: ls  [running]"
    done = entry.model_copy(update={"failed": True, "duration_ms": 1500})
    assert activity_line(done).endswith("Bash: ls  [failed, 1.5 s]")


# MCP tools.


@pytest.mark.processes
async def test_a_model_sends_reads_and_budgets_through_the_tools(engine: Engine, db: str, tmp_path: Path) -> None:
    parent, run_id, attempt = await story(engine, tmp_path)
    plain = (await engine.runs.start_run(StartRunInput(name="plain"))).run.run_id
    async with Client(stdio_server(db)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert "within seconds" in (tools["send_message"].description or "")
        assert "read_messages" in (tools["send_message"].description or "")
        assert "max_budget_usd" in (tools["spawn_subagent"].description or "")
        assert "set_budget" in (tools["spawn_subagent"].description or "")
        assert "activity" in (tools["status"].description or "") and "cost" in (tools["status"].description or "")
        assert tools["set_budget"].input_schema["required"] == ["run_id"]

        sent = await call(client, "send_message", run_id=run_id, text="Skip the docs; fix the parser first.")
        assert sent["message"]["status"] == "queued" and sent["message"]["source"] == "tool"
        assert "read_messages" in sent["delivery"]  # the 'command' harness takes no input while it runs
        shown = await call(client, "status", run_id=run_id, activity_limit=3)
        assert [m["text"] for m in shown["messages"]] == ["Skip the docs; fix the parser first."]
        assert [a["kind"] for a in shown["activity"]][-1] == "message"  # the queueing is on its timeline
        assert shown["activity_cursor"] is not None
        assert shown["run"]["usage"]["cost_usd"] == pytest.approx(0.03)
        assert (await call(client, "status", run_id=parent))["run"]["tree_usage"]["cost_usd"] == pytest.approx(0.03)

        inbox = await call(client, "read_messages", run_id=run_id)
        assert [(m["text"], m["status"], m["how"]) for m in inbox["messages"]] == [
            ("Skip the docs; fix the parser first.", "delivered", "inbox")
        ]
        assert (await call(client, "read_messages", run_id=run_id))["messages"] == []

        refused = await client.call_tool("send_message", {"run_id": plain, "text": "hello"})
        assert refused.is_error and "is not a sub-agent" in refused.content[0].text
        nothing = await client.call_tool("set_budget", {"run_id": run_id})
        assert nothing.is_error and "invalid_input" in nothing.content[0].text

        await pause_at_budget(engine, run_id, attempt)
        raised = await call(client, "set_budget", run_id=run_id, max_budget_usd=0.5)
        assert raised["resumed_run_ids"] == [run_id] and raised["run"]["budget"]["max_budget_usd"] == 0.5
    # Not waiting any more (the server's supervisor may have started it again since: its status moves on).
    assert not (await status_of(engine, run_id)).waits


# The command line.


@pytest.mark.processes
async def test_the_cli_shows_cost_activity_and_messages_and_steers(engine: Engine, db: str, tmp_path: Path) -> None:
    parent, run_id, attempt = await story(engine, tmp_path)
    plain = (await engine.runs.start_run(StartRunInput(name="plain"))).run.run_id

    table = cli(db, "runs").stdout.splitlines()
    assert table[0].split() == ["RUN", "NAME", "STATUS", "COST", "CREATED", "UPDATED", "PARENT", "WORKSPACE"]
    rows = {cells[0]: cells for cells in (line.split() for line in table[1:])}  # piped: the id first, plain
    assert rows[parent][3] == rows[run_id][3] == "$0.0300" and rows[plain][3] == "-"

    queued = cli(db, "message", run_id, "Skip the docs; fix the parser first.").stdout
    assert queued.startswith("message ") and f"queued for run {run_id}: it reaches the agent" in queued

    shown = cli(db, "status", run_id).stdout
    assert "usage:     $0.0300, 13.5k tokens (12.0k in, 1.5k out), 3 turns, claude-x" in shown
    assert "budget:    spent $0.0300 of $0.0500" in shown
    assert "tool       Bash: npm test  [ok, 5.2 s]" in shown and "Edit parser.py  [failed, 40 ms]" in shown
    assert "messages queued for it (1, not delivered yet):" in shown and "(cli)  Skip the docs" in shown
    assert "COST" in shown and "lint-docs" in shown  # the children, with what they spent
    assert "tree:      $0.0300" in cli(db, "status", parent).stdout

    timeline = cli(db, "logs", run_id, "--activity").stdout.splitlines()
    assert [line.split()[3] for line in timeline] == ["turn", "tool", "text", "tool", "message"]
    assert cli(db, "logs", run_id, "--activity", "--tail", "1").stdout.count("\n") == 1
    assert "Bash: npm test  [ok, 5.2 s]" in timeline[1]

    for argv, expected in (
        (["message", plain, "hello"], f"invalid_input: run {plain} is not a sub-agent: messages go to sub-agents"),
        (["budget", run_id], "invalid_input: give --usd DOLLARS, --turns N or both"),
        (["budget", run_id, "--usd", "0"], "invalid_input: invalid options: --usd: Input should be greater than 0"),
        (["message", run_id, ""], "invalid_input: invalid options: TEXT: String should have at least 1 character"),
        (
            ["logs", plain, "--activity"],
            f"invalid_input: run {plain} is not a sub-agent: only sub-agents have activity",
        ),
    ):
        refused = cli(db, *argv, check=False)
        assert refused.returncode == 1 and refused.stderr.startswith(expected), (argv, refused.stderr)
        assert "Traceback" not in refused.stderr
        assert [tool for tool in CONTRACT_TOOLS if "_" in tool and tool in refused.stderr] == [], refused.stderr

    await pause_at_budget(engine, run_id, attempt)
    paused = cli(db, "status", run_id).stdout
    assert f"(paused: raise it with 'mcp-orchestrator budget {run_id} --usd DOLLARS')" in paused
    assert "a higher budget" in paused  # what its wait is for
    raised = cli(db, "budget", run_id, "--usd", "0.5", "--turns", "40").stdout
    assert raised.splitlines() == [
        f"run {run_id}: spent $0.0600 of $0.5000, 4 of 40 turns",
        f"went on: 1 run(s) paused at a budget: {run_id}",
    ]
    again = json.loads(cli(db, "budget", run_id, "--usd", "0.6", "--json").stdout)
    assert again["resumed_run_ids"] == [] and again["run"]["budget"] == {"max_budget_usd": 0.6, "max_turns": 40}

    helps = {command: " ".join(cli(db, command, "--help").stdout.split()) for command in ("message", "budget", "logs")}
    assert "within seconds" in helps["message"] and "'-' reads it from stdin" in helps["message"]
    assert "--usd USD" in helps["budget"] and "--turns N" in helps["budget"] and "pause" in helps["budget"]
    assert "--activity" in helps["logs"] and "tool call" in helps["logs"]


@pytest.mark.processes
async def test_logs_activity_follow_prints_a_tool_call_once_it_finished_and_stops_when_the_run_ends(
    engine: Engine, db: str, tmp_path: Path
) -> None:
    run_id, attempt = await working_agent(engine, tmp_path)
    await engine.subagents.report(run_id, attempt, activity=[Activity(at=now(), kind="turn", summary="turn 1")])
    script = Path(sys.executable).with_name("mcp-orchestrator")
    lines: queue.Queue[str] = queue.Queue()
    with subprocess.Popen(
        [str(script), "logs", run_id, "--activity", "--follow", "--db", db],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(),
    ) as follow:
        reader = threading.Thread(target=lambda: [lines.put(line) for line in follow.stdout or []], daemon=True)
        reader.start()
        try:
            assert "turn 1" in lines.get(timeout=20)
            await engine.subagents.report(run_id, attempt, activity=[tool_call("t1", "Bash: pytest -x")])
            said = Activity(at=now(), kind="text", summary="waiting")
            await engine.subagents.report(run_id, attempt, activity=[said])
            time.sleep(1.5)
            assert lines.empty()  # the call still runs: it, and what came after it, wait for its outcome
            done = tool_call("t1", "Bash: pytest -x", failed=False, duration_ms=1500)
            await engine.subagents.report(run_id, attempt, activity=[done])
            assert lines.get(timeout=10).rstrip().endswith("Bash: pytest -x  [ok, 1.5 s]")
            assert "waiting" in lines.get(timeout=10)
            await engine.runs.finish_run(FinishRunInput(run_id=run_id, output="fixed"))
            result = Activity(at=now(), kind="result", summary="fixed", failed=False)
            await engine.subagents.exited(run_id, attempt, 0, output="fixed", activity=[result])
            assert "result     fixed  [ok]" in lines.get(timeout=10)
            assert follow.wait(timeout=20) == 0  # the run ended and its process exited: nothing more can come
        finally:
            follow.kill()
        reader.join(timeout=10)
        assert lines.empty() and follow.stderr is not None and follow.stderr.read() == ""


# The JSON API.


@pytest.fixture
async def api(
    http_server: Callable[..., str], private_state_dir: Path
) -> AsyncIterator[Callable[[], httpx2.AsyncClient]]:
    """A client for a server started on first use (after the test has set its store up)."""
    clients: list[httpx2.AsyncClient] = []

    def start() -> httpx2.AsyncClient:
        base = http_server()
        headers = {"Authorization": f"Bearer {http_token(private_state_dir)}", "Content-Type": "application/json"}
        clients.append(httpx2.AsyncClient(base_url=base, headers=headers, timeout=30))
        return clients[-1]

    yield start
    for client in clients:
        await client.aclose()


@pytest.mark.processes
async def test_the_api_pages_activity_and_takes_messages_and_budgets(
    engine: Engine, tmp_path: Path, api: Callable[[], httpx2.AsyncClient]
) -> None:
    parent, run_id, attempt = await story(engine, tmp_path)
    client = api()

    latest = (await client.get(f"/api/runs/{run_id}/activity", params={"limit": 2})).json()
    assert [a["summary"] for a in latest["activity"]] == [
        "The parser drops the last token; fixing it.",
        "Edit parser.py",
    ]
    assert latest["before"] is not None and latest["after"] == str(latest["activity"][-1]["seq"])
    older = (await client.get(f"/api/runs/{run_id}/activity", params={"before": latest["before"]})).json()
    assert [a["kind"] for a in older["activity"]] == ["turn", "tool"] and older["before"] is None
    assert older["activity"][1]["failed"] is False and older["activity"][1]["duration_ms"] == 5230  # updated in place
    newer = (await client.get(f"/api/runs/{run_id}/activity", params={"after": older["after"]})).json()
    assert newer["activity"] == latest["activity"]
    assert (await client.get(f"/api/runs/{run_id}/activity", params={"after": latest["after"]})).json()[
        "activity"
    ] == []

    sent = await client.post(f"/api/runs/{run_id}/messages", json={"text": "Use the v2 endpoint."})
    assert sent.status_code == 200, sent.text
    assert sent.json()["message"]["source"] == "api" and sent.json()["message"]["status"] == "queued"
    polled = (await client.get(f"/api/runs/{run_id}/activity", params={"after": latest["after"]})).json()
    assert [a["kind"] for a in polled["activity"]] == ["message"]
    shown = (await client.get(f"/api/runs/{run_id}")).json()
    assert shown["run"]["budget"]["max_budget_usd"] == 0.05 and shown["run"]["usage"]["turns"] == 3
    assert [m["text"] for m in shown["messages"]] == ["Use the v2 endpoint."]

    for path, body, named in (
        (f"/api/runs/{run_id}/messages", {"txt": "typo"}, "text: Field required"),
        (f"/api/runs/{run_id}/messages", {"text": ""}, "text: String should have at least 1 character"),
        (f"/api/runs/{run_id}/budget", {"max_budget_usd": -1}, "max_budget_usd: Input should be greater than 0"),
        (f"/api/runs/{run_id}/budget", {}, "give max_budget_usd, max_turns or both"),
        (f"/api/runs/{parent}/messages", {"text": "hi"}, "is not a sub-agent"),
    ):
        refused = await client.post(path, json=body)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_input", refused.text
        assert named in refused.json()["message"], refused.text
    for params, named in (({"before": "abc"}, "before"), ({"before": "1", "after": "2"}, "not both")):
        refused = await client.get(f"/api/runs/{run_id}/activity", params=params)
        assert refused.status_code == 400 and named in refused.json()["message"], refused.text
    as_text = await client.post(
        f"/api/runs/{run_id}/messages", content=b'{"text": "x"}', headers={"Content-Type": "text/plain"}
    )
    assert as_text.status_code == 415
    assert (await client.get("/api/runs/01NOSUCHRUN/activity")).status_code == 404

    await pause_at_budget(engine, run_id, attempt)
    raised = await client.post(f"/api/runs/{run_id}/budget", json={"max_budget_usd": 0.5})
    assert raised.status_code == 200 and raised.json()["resumed_run_ids"] == [run_id], raised.text
    assert raised.json()["run"]["tree_usage"]["cost_usd"] == pytest.approx(0.06)


# The dashboard.


async def signed_in(client: httpx2.AsyncClient, base: str, state_dir: Path) -> dict[str, str]:
    """Sign in through the form as a browser does; the cookie header to send."""
    response = await client.post(
        f"{base}/login", data={"token": http_token(state_dir)}, headers={"Origin": base}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    cookie = response.cookies.get(COOKIE)
    client.cookies.clear()
    return {"Cookie": f"{COOKIE}={cookie}"}


def csrf_in(page: str) -> str:
    found = re.search(r"<meta name='csrf-token' content='([^']+)'>", page)
    assert found, "the page carries no CSRF token"
    return found.group(1)


@pytest.mark.processes
@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_the_dashboard_shows_figures_timeline_and_silence_and_takes_messages_and_budgets(
    engine: Engine, tmp_path: Path, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    _, run_id, attempt = await story(engine, tmp_path)
    quiet, _ = await working_agent(engine, tmp_path, "quiet-one", at=now() - timedelta(minutes=30))
    base = http_server()
    async with httpx2.AsyncClient(timeout=30) as client:
        jar = await signed_in(client, base, private_state_dir)
        runs = (await client.get(f"{base}/", headers=jar)).text
        assert "<th>Cost</th>" in runs and "$0.0300" in runs
        assert re.search(r"<span class='flag silent'>silent for (29|30|31) min</span>", runs), runs
        quiet_page = (await client.get(f"{base}/runs/{quiet}", headers=jar)).text
        assert "silent for" in quiet_page

        page = (await client.get(f"{base}/runs/{run_id}", headers=jar)).text
        assert "<h2>Timeline</h2>" in page and "spent $0.0300 of $0.0500" in page
        assert "13.5k tokens (12.0k in, 1.5k out)" in page and "claude-x" in page
        order = [page.index(text) for text in ("turn 1", "Bash: npm test", ">plan<", "lint-docs", "Edit parser.py")]
        assert order == sorted(order)  # activity, steps and child runs in time, newest at the bottom
        assert "ok, 5.2 s" in page and "failed, 40 ms" in page
        assert f"data-message='/runs/{run_id}/messages'" in page and f"data-budget='/runs/{run_id}/budget'" in page
        csrf = csrf_in(page)

        action = f"{base}/runs/{run_id}/messages"
        forged = await client.post(action, json={"text": "x"}, headers={**jar, "Origin": base})
        assert forged.status_code == 403  # no CSRF token
        headers = {**jar, "Origin": base, "X-CSRF-Token": csrf}
        sent = await client.post(action, json={"text": "Use the <v2> endpoint."}, headers=headers)
        assert sent.status_code == 200 and sent.json()["message"]["source"] == "dashboard", sent.text
        bad = await client.post(action, json={"words": "x"}, headers=headers)
        assert bad.status_code == 400 and "text: Field required" in bad.json()["message"]
        page = (await client.get(f"{base}/runs/{run_id}", headers=jar)).text
        assert "Use the &lt;v2&gt; endpoint." in page and "<v2>" not in page
        assert {m.source for m in (await status_of(engine, run_id)).messages} == {"dashboard"}

        await pause_at_budget(engine, run_id, attempt)
        page = (await client.get(f"{base}/runs/{run_id}", headers=jar)).text
        assert "Paused: budget reached: $0.0600 of $0.0500" in page and "Raise budget" in page
        raised = await client.post(f"{base}/runs/{run_id}/budget", json={"max_budget_usd": 0.5}, headers=headers)
        assert raised.status_code == 200 and raised.json()["resumed_run_ids"] == [run_id], raised.text
    await engine.runs.finish_run(FinishRunInput(run_id=quiet, output="done"))  # before the server would reap it


@pytest.mark.processes
@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_in_a_browser_the_run_page_shows_the_timeline_and_raises_a_budget(
    engine: Engine, tmp_path: Path, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    _, run_id, attempt = await story(engine, tmp_path)
    await pause_at_budget(engine, run_id, attempt)  # idle: nothing for the server to start or reap
    base = http_server()
    problems: list[str] = []
    async with dashboard_page(base, http_token(private_state_dir), problems) as page:
        await page.goto(f"{base}/runs/{run_id}")
        await page.wait_for_selector("h2:has-text('Timeline')")
        assert await page.is_visible("text=Paused: budget reached")

        await page.fill("form[data-message] textarea", "Keep the fix small.")
        await page.click("button:has-text('Send message')")
        await page.wait_for_selector("tr.queued-message:has-text('Keep the fix small.')", timeout=10_000)
        assert [m.text for m in (await status_of(engine, run_id)).messages] == ["Keep the fix small."]
        await page.wait_for_selector("#notice", state="hidden", timeout=10_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "run-activity.png", full_page=True)

        await page.fill("form[data-budget] input[name=max_budget_usd]", "0.5")
        await page.click("button:has-text('Raise budget')")
        await page.wait_for_selector("text=Paused: budget reached", state="detached", timeout=10_000)
    assert problems == []
    raised = await status_of(engine, run_id)
    assert raised.run.budget is not None and raised.run.budget.max_budget_usd == 0.5 and not raised.waits
