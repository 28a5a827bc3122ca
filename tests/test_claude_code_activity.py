"""What a person sees of, spends on and tells a Claude Code sub-agent, end to end: the real Claude Code binary
(started by a real server with the built-in ``claude`` profile, stream-json in and out) against the scripted
model stand-in on 127.0.0.1. Its activity timeline, what it cost as Claude Code itself priced it, budgets
that pause a run (and a tree) until raised, and messages that reach it while it works or in its resume."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import psutil
import pytest

from .claude_code import Orchestrator, ended, journal, orchestrating
from .model_standin import JSON, Standin, Turn, hold, text, tool_use
from .subagent_helpers import pid_gone
from .support import call, dashboard_page, http_token

pytestmark = [pytest.mark.anyio, pytest.mark.processes]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"

# Read, Bash and Edit in the agent's directory go ahead without asking anybody.
ALLOWED = '[profiles.claude.permissions]\nallow = ["Read(./**)", "Bash(echo:*)", "Edit(./**)"]\n'
RUN_ID = re.compile(r"your run id is (\w+)")


@pytest.fixture
def db(db_path: Path) -> str:
    """SQLite only: Claude Code is slow to start; the stores are tested with the fake agents."""
    return str(db_path)


@pytest.fixture
def standin() -> Iterator[Standin]:
    with Standin() as model:
        yield model


@pytest.fixture
def orchestrator(
    tmp_path: Path, db: str, http_server: Callable[..., str], private_state_dir: Path, standin: Standin
) -> Callable[..., AbstractAsyncContextManager[Orchestrator]]:
    """Start a server that supervises Claude Code sub-agents (``config`` adds to its config file)."""

    def start(config: str = "", **env: str) -> AbstractAsyncContextManager[Orchestrator]:
        return orchestrating(tmp_path, db, http_server, private_state_dir, standin, f"{ALLOWED}\n{config}", **env)

    return start


def tools(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry for entry in result["activity"] if entry["kind"] == "tool"]


def results_printed(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The result lines Claude Code printed to the run's stdout.log, over all its attempts."""
    lines = (Path(result["process"]["log_dir"]) / "stdout.log").read_text().splitlines()
    return [line for line in map(json.loads, filter(str.strip, lines)) if line.get("type") == "result"]


def priced(results: list[dict[str, Any]]) -> dict[str, float]:
    """What Claude Code said its processes spent: each result's own share (model_usage_since_last_result)."""
    spent = {"cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0}
    for result in results:
        for counts in result["model_usage_since_last_result"].values():
            spent["cost_usd"] += counts["costUSD"]
            spent["input_tokens"] += counts["inputTokens"]
            spent["output_tokens"] += counts["outputTokens"]
    return spent


def last_user(body: JSON) -> str:
    """The last user message of a request, as JSON text (Claude Code may put a system note after it)."""
    users = [message for message in body["messages"] if message["role"] == "user"]
    return json.dumps(users[-1]) if users else ""


def resumed_request(standin: Standin, task: str) -> JSON:
    """The first scripted request in which the task's session was resumed (its resume prompt, last)."""
    requests = [r.body for r in standin.scripted_requests if task in json.dumps(r.body["messages"])]
    firsts = [body for body in requests if "You are resumed" in last_user(body)]
    assert firsts, "no request resumed the session"
    return firsts[0]


def session(notes: Path) -> list[Turn]:
    """A session of several turns: read a file, run a command, edit the file, answer."""
    return [
        tool_use("Read", {"file_path": str(notes)}),
        tool_use("Bash", {"command": "echo checked", "description": "check"}),
        tool_use("Edit", {"file_path": str(notes), "old_string": "draft", "new_string": "final"}),
        text("The notes are final."),
    ]


async def test_the_timeline_shows_each_tool_call_and_the_tree_adds_up_what_claude_code_priced(
    orchestrator: Callable[..., Any], standin: Standin
) -> None:
    async with orchestrator() as orch:
        notes = orch.workdir / "notes.txt"
        notes.write_text("a draft\n")
        parent = (await call(orch.client, "start_run", name="release"))["run"]["run_id"]
        standin.add(*session(notes))
        worker = await orch.until(await orch.spawn("finish the notes", parent_run_id=parent), ended)
        standin.add(text("Nothing else to do."))
        helper = await orch.until(await orch.spawn("look around", parent_run_id=parent), ended)
        tree = (await orch.status(parent))["run"]
    assert worker["run"]["status"] == "completed", worker["run"]["error"]
    assert worker["run"]["output"] == "The notes are final." and notes.read_text() == "a final\n"
    calls = tools(worker)
    assert [(entry["tool"], entry["summary"]) for entry in calls] == [
        ("Read", f"Read {notes}"),
        ("Bash", "Bash: echo checked"),
        ("Edit", f"Edit {notes}"),
    ]
    assert all(entry["failed"] is False and entry["duration_ms"] is not None for entry in calls), calls
    assert all(entry["attempt"] == 1 for entry in calls)
    kinds = [entry["kind"] for entry in worker["activity"]]
    assert kinds.index("turn") < kinds.index("tool") and kinds[-1] == "result", kinds

    # Its cost and tokens are Claude Code's own figures, as it printed them.
    (printed,) = results_printed(worker)
    spent = priced([printed])
    usage = worker["run"]["usage"]
    assert spent["cost_usd"] == pytest.approx(printed["total_cost_usd"]) and spent["cost_usd"] > 0  # one process
    assert usage["cost_usd"] == pytest.approx(spent["cost_usd"], rel=1e-9)
    assert (usage["input_tokens"], usage["output_tokens"]) == (spent["input_tokens"], spent["output_tokens"])
    assert usage["turns"] == printed["num_turns"] == 4

    # The parent spent nothing itself; its tree is what its children spent.
    helper_usage = helper["run"]["usage"]
    assert helper["run"]["status"] == "completed" and helper_usage["cost_usd"] > 0
    assert tree["usage"] is None or tree["usage"]["cost_usd"] == 0
    assert tree["tree_usage"]["cost_usd"] == pytest.approx(usage["cost_usd"] + helper_usage["cost_usd"], rel=1e-9)
    for figure in ("input_tokens", "output_tokens", "turns"):
        assert tree["tree_usage"][figure] == usage[figure] + helper_usage[figure], figure


def stopped(result: dict[str, Any]) -> bool:
    """Held at a budget: a budget wait, and no process."""
    return [wait["kind"] for wait in result["waits"]] == ["budget"] and result["process"]["state"] in ("idle", "queued")


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


async def test_a_budget_reached_pauses_the_run_and_a_higher_one_resumes_its_session(
    orchestrator: Callable[..., Any], standin: Standin
) -> None:
    async with orchestrator() as orch:
        notes = orch.workdir / "notes.txt"
        notes.write_text("a draft\n")
        resumed = hold(tool_use("Bash", {"command": "echo again", "description": "check again"}))
        standin.add(*session(notes)[:2], resumed, text("Finished within the new budget."))
        run_id = await orch.spawn("finish the notes", max_budget_usd=0.02)
        paused = await orch.until(run_id, lambda r: stopped(r) or ended(r))
        assert paused["run"]["status"] == "waiting" and paused["run"]["error"] is None  # paused, not failed
        assert paused["process"]["state"] == "idle"
        assert paused["process"]["failures"] == 0 and pid_gone(paused["process"]["pgid"])
        (reached,) = journal(paused, "budget_reached")
        assert reached["detail"]["limit_usd"] == 0.02 and reached["detail"]["spent_usd"] >= 0.02
        spent = paused["run"]["usage"]["cost_usd"]
        assert spent >= 0.02 and paused["run"]["tree_usage"]["cost_usd"] == spent
        assert [entry["kind"] for entry in paused["activity"]][-1] == "budget"

        raised = await call(orch.client, "set_budget", run_id=run_id, max_budget_usd=1.0)
        assert raised["resumed_run_ids"] == [run_id] and raised["run"]["budget"]["max_budget_usd"] == 1.0
        resumed.wait_reached()
        live = await orch.status(run_id)
        argv = psutil.Process(live["process"]["pgid"]).cmdline()
        resumed.release()
        result = await orch.until(run_id, ended)
    (first, *_) = printed = results_printed(result)
    if first["subtype"] == "error_max_budget_usd":  # Claude Code stopped at the cap it was given
        assert first["errors"] == ["Reached maximum budget ($0.02)"], first["errors"]
    else:  # the supervisor stopped it first, at a heartbeat
        assert journal(result, "process_exited")[0]["detail"]["how"] == "budget"
    assert option(argv, "--resume") == paused["process"]["session_id"]
    assert result["run"]["status"] == "completed", result["run"]["error"]
    assert result["run"]["output"] == "Finished within the new budget."
    assert result["process"]["attempt"] == 2 and result["process"]["session_id"] == paused["process"]["session_id"]
    first_resumed = resumed_request(standin, "finish the notes")  # --resume: the task is in its conversation
    assert "stopped at its budget, which has been raised" in last_user(first_resumed)
    assert result["run"]["usage"]["cost_usd"] == pytest.approx(priced(printed)["cost_usd"], rel=1e-9)
    assert printed[-1]["total_cost_usd"] == pytest.approx(result["run"]["usage"]["cost_usd"])  # the session's total
    # Claude Code's --max-budget-usd caps what its process spends (a resumed one counts from $0, as the
    # "USD budget" note it sends the model says): it is given what the tree has left, no more.
    assert float(option(argv, "--max-budget-usd")) == pytest.approx(1.0 - spent, abs=1e-5)


async def test_a_tree_that_spent_its_budget_starts_no_new_sub_agent_until_it_is_raised(
    orchestrator: Callable[..., Any], standin: Standin
) -> None:
    def answer(body: JSON) -> Turn:
        part = "first" if "first part" in json.dumps(body["messages"]) else "second"
        return text(f"The {part} part is done.")

    standin.add(answer)
    async with orchestrator() as orch:
        parent = (await call(orch.client, "start_run", name="release", max_budget_usd=0.01))["run"]["run_id"]
        first_id = await orch.spawn("first part", parent_run_id=parent)
        first = await orch.until(first_id, lambda r: stopped(r) or ended(r))
        # One answer spends the tree's budget: Claude Code (given --max-budget-usd 0.01) calls it
        # error_max_budget_usd, and the child pauses like its tree.
        assert first["run"]["status"] == "waiting" and first["process"]["state"] == "idle"
        spent = (await orch.status(parent))["run"]["tree_usage"]["cost_usd"]
        assert spent >= 0.01 and spent == first["run"]["usage"]["cost_usd"]
        asked = len(standin.requests)

        standin.add(answer, answer)
        second_id = await orch.spawn("second part", parent_run_id=parent)
        held = await orch.until(second_id, stopped)
        assert held["run"]["status"] == "waiting" and held["process"]["state"] == "queued"
        assert held["process"]["attempt"] == 0 and held["process"]["pid"] is None  # no process started
        (reached,) = journal(held, "budget_reached")
        assert reached["detail"]["holder"] == parent and reached["detail"]["limit_usd"] == 0.01
        assert "budget reached" in held["activity"][-1]["summary"]
        assert len(standin.requests) == asked  # the model heard nothing of it

        raised = await call(orch.client, "set_budget", run_id=parent, max_budget_usd=1.0)
        assert sorted(raised["resumed_run_ids"]) == sorted([first_id, second_id])  # the whole tree goes on
        second = await orch.until(second_id, ended)
        first = await orch.until(first_id, ended)
    assert second["run"]["status"] == "completed", second["run"]["error"]
    assert second["run"]["output"] == "The second part is done." and second["process"]["attempt"] == 1
    assert any("second part" in json.dumps(r.body["messages"]) for r in standin.scripted_requests[asked:])
    assert first["run"]["status"] == "completed" and first["process"]["attempt"] == 2, first["run"]["error"]
    assert first["run"]["output"] == "The first part is done."


def delivered(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry["detail"] for entry in journal(result, "message_delivered")]


async def test_a_message_sent_while_claude_code_thinks_reaches_its_next_request_and_the_session_ends_cleanly(
    orchestrator: Callable[..., Any], standin: Standin
) -> None:
    thinking = hold(text("Summary written."))
    standin.add(thinking, text("Summary written, and the changelog is mentioned."))
    async with orchestrator() as orch:
        run_id = await orch.spawn("write the summary")
        thinking.wait_reached()
        sent = await call(orch.client, "send_message", run_id=run_id, text="Mention the changelog too.")
        assert "written to the running agent" in sent["delivery"]
        live = await orch.until(run_id, lambda r: bool(delivered(r)))
        assert delivered(live) == [{"message_id": sent["message"]["message_id"], "how": "live"}]
        assert len(standin.scripted_requests) == 1  # delivered while the model was still thinking
        thinking.release()
        result = await orch.until(run_id, ended)
    assert result["run"]["status"] == "completed", result["run"]["error"]
    assert result["run"]["output"] == "Summary written, and the changelog is mentioned."
    later = standin.scripted_requests[1:]
    assert later and "Mention the changelog too." in last_user(later[0].body)
    assert "Mention the changelog too." not in json.dumps(standin.scripted_requests[0].body)
    told = [entry for entry in result["activity"] if entry["kind"] == "message"]
    assert any("delivered (live)" in entry["summary"] and "Mention the changelog" in entry["summary"] for entry in told)
    assert result["messages"] == []  # nothing left queued
    # It answered both, saw its input end and exited by itself, once.
    (exited,) = journal(result, "process_exited")
    assert exited["detail"]["how"] == "exited" and exited["detail"]["exit_code"] == 0
    assert result["process"]["exit_code"] == 0 and result["process"]["failures"] == 0


def wait_for_review(body: JSON) -> Turn:
    """The model waits for an event, with the run id its prompt gave it."""
    found = RUN_ID.search(json.dumps(body["messages"]))
    assert found, "the prompt names no run id"
    arguments = {"run_id": found[1], "step": "review", "event": "review.done", "block_s": 0}
    return tool_use("mcp__orchestrator__wait_for_event", arguments)


async def test_a_message_to_an_agent_that_waits_is_in_its_resume_prompt(
    orchestrator: Callable[..., Any], standin: Standin
) -> None:
    standin.add(wait_for_review, text("Waiting for the review; exiting."), text("Released, with the changelog."))
    async with orchestrator() as orch:
        run_id = await orch.spawn("release it once reviewed")
        idle = await orch.until(run_id, lambda r: r["process"]["state"] == "idle" or ended(r))
        assert idle["run"]["status"] == "waiting" and [w["kind"] for w in idle["waits"]] == ["event"]
        assert pid_gone(idle["process"]["pgid"]) and idle["process"]["exit_code"] == 0
        asked = len(standin.scripted_requests)

        sent = await call(orch.client, "send_message", run_id=run_id, text="Mention the changelog in the notes.")
        assert "when its process starts (or resumes) next" in sent["delivery"]
        queued = await orch.status(run_id)
        assert [m["text"] for m in queued["messages"]] == ["Mention the changelog in the notes."]
        await call(orch.client, "send_event", name="review.done", data={"approved": True})
        result = await orch.until(run_id, ended)
    assert result["run"]["status"] == "completed", result["run"]["error"]
    assert result["run"]["output"] == "Released, with the changelog." and result["process"]["attempt"] == 2
    resumed = standin.scripted_requests[asked].body  # the first request of the resumed process
    assert "Mention the changelog in the notes." in last_user(resumed) and "You are resumed" in last_user(resumed)
    assert delivered(result) == [{"message_id": sent["message"]["message_id"], "how": "resume"}]
    (message,) = [e for e in result["journal"] if e["kind"] == "message_delivered"]
    assert message["attempt"] == 2


async def test_the_dashboard_run_page_shows_the_timeline_and_what_it_cost(
    orchestrator: Callable[..., Any], standin: Standin, private_state_dir: Path
) -> None:
    async with orchestrator() as orch:
        notes = orch.workdir / "notes.txt"
        notes.write_text("a draft\n")
        standin.add(*session(notes))
        result = await orch.until(await orch.spawn("finish the notes"), ended)
        assert result["run"]["status"] == "completed", result["run"]["error"]
        run_id, cost = result["run"]["run_id"], result["run"]["usage"]["cost_usd"]
        problems: list[str] = []
        async with dashboard_page(orch.base, http_token(private_state_dir), problems) as page:
            await page.goto(f"{orch.base}/runs/{run_id}")
            await page.wait_for_selector("h2:has-text('Timeline')")
            calls = [
                " ".join(row.split())
                for row in await page.locator("li.moment.tool > details > summary").all_inner_texts()
            ]
            figures = " ".join((await page.locator(".figures").inner_text()).split())
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=ARTIFACTS / "claude-code-run.png", full_page=True)
    assert problems == []
    assert len(calls) == 3, calls
    for row, what in zip(calls, (f"Read {notes}", "Bash: echo checked", f"Edit {notes}"), strict=True):
        assert what in row and re.search(r"\bok, \d", row), row  # the summary, and how it went
    assert f"Cost ${cost:.4f}" in figures and "Turns 4" in figures, figures
