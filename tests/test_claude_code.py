"""Background Claude Code sub-agents, end to end: the real Claude Code binary, started by a real server
through spawn_subagent with the built-in ``claude`` profile, against the scripted model stand-in on
127.0.0.1. Nothing but the model is stood in for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import pytest

from .claude_code import Orchestrator, ended, journal, orchestrating
from .model_standin import Standin, hold, http_error, text, tool_use
from .subagent_helpers import pid_gone
from .support import call, cli

pytestmark = [pytest.mark.anyio, pytest.mark.processes]


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
        return orchestrating(
            tmp_path,
            db,
            http_server,
            private_state_dir,
            standin,
            "[limits]\nusage_limit_backoff_s = 2\n" + config,
            **env,
        )

    return start


async def test_a_task_completes_with_the_models_answer_and_its_session_is_recorded(
    orchestrator: Callable[..., Any], standin: Standin
) -> None:
    standin.add(text("All done: the answer is 42."))
    async with orchestrator() as orch:
        run_id = await orch.spawn("answer the question")
        result = await orch.until(run_id, ended)
    assert result["run"]["status"] == "completed", result["run"]["error"]
    assert result["run"]["output"] == "All done: the answer is 42."
    (started,) = journal(result, "session_started")
    assert started["detail"]["session_id"] == result["process"]["session_id"]
    first = standin.scripted_requests[0].body
    assert "answer the question" in json.dumps(first["messages"])  # the task reached the model
    assert result["process"]["failures"] == 0


async def test_a_missing_claude_is_refused_at_spawn_naming_the_path(
    orchestrator: Callable[..., Any], tmp_path: Path
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    async with orchestrator(PATH=str(empty)) as orch:
        refused = await orch.client.call_tool("spawn_subagent", {"prompt": "p", "cwd": str(orch.workdir)})
    assert refused.is_error
    message = refused.content[0].text
    assert "'claude'" in message and "not on PATH" in message and str(empty) in message
    assert "the PATH of the server that supervises sub-agents is what counts" in message


async def test_an_error_result_puts_claude_codes_own_words_into_the_runs_error(
    orchestrator: Callable[..., Any], standin: Standin
) -> None:
    standin.add(http_error(401, "authentication_error", message="invalid x-api-key"))
    async with orchestrator("[profiles.claude]\nmax_attempts = 1\n") as orch:
        run_id = await orch.spawn()
        result = await orch.until(run_id, ended)
    error = result["run"]["error"]
    assert result["run"]["status"] == "failed"
    assert "Invalid API key" in error["message"] and "api_error_status 401" in error["message"], error
    assert "--- attempt" not in error["message"]  # the cause, not the log's bookkeeping


async def test_a_usage_limit_pauses_the_run_and_holds_the_account_until_it_resets(
    orchestrator: Callable[..., Any], standin: Standin
) -> None:
    def answer(body: Any) -> Any:
        return text("first is done" if "first task" in json.dumps(body["messages"]) else "second is done")

    first_try = hold(http_error(429, "rate_limit_error", {"retry-after": "3600"}, "usage limit reached"))
    standin.add(first_try, answer, answer)
    async with orchestrator("[profiles.claude]\nmax_attempts = 1\nmax_concurrent = 1\n") as orch:
        first = await orch.spawn("first task")
        first_try.wait_reached()
        second = await orch.spawn("second task")  # queued: one claude at a time
        first_try.release()
        paused = await orch.until(first, lambda r: r["process"]["paused_until"] is not None)
        assert paused["run"]["status"] == "waiting" and paused["process"]["state"] == "idle"
        assert paused["process"]["failures"] == 0  # a limit is not a failed attempt (max_attempts is 1)
        assert [w["step"] for w in paused["waits"]] == ["usage-limit-1"]
        assert "rate limit" in paused["process"]["paused_reason"]
        held = await orch.status(second)
        assert held["process"]["state"] == "queued" and held["process"]["paused_until"] is not None
        assert held["process"]["attempt"] == 0  # it did not start against the exhausted account
        done = [await orch.until(run_id, ended) for run_id in (first, second)]
    assert [r["run"]["status"] for r in done] == ["completed", "completed"], [r["run"]["error"] for r in done]
    assert {r["run"]["output"] for r in done} == {"first is done", "second is done"}
    assert done[0]["process"]["attempt"] == 2 and done[0]["process"]["failures"] == 0
    resumed = [r for r in standin.scripted_requests if "first task" in json.dumps(r.body["messages"])]
    assert len(resumed) == 2  # the pause resumed the same conversation: the task is still in it


async def test_a_killed_runner_is_resumed_in_the_session_recorded_from_init(
    orchestrator: Callable[..., Any], standin: Standin
) -> None:
    thinking = hold(text("never delivered"))
    standin.add(thinking, text("finished after the crash"))
    async with orchestrator() as orch:
        run_id = await orch.spawn("a long task")
        thinking.wait_reached()
        live = await orch.until(run_id, lambda r: r["process"]["session_id"] is not None)
        session_id, runner = live["process"]["session_id"], live["process"]["pid"]
        os.kill(runner, signal.SIGKILL)  # the runner dies mid-attempt; its agent is reaped with it
        with anyio.fail_after(30):
            while not pid_gone(live["process"]["pgid"]):
                await anyio.sleep(0.1)
        thinking.release()
        result = await orch.until(run_id, ended)
    assert result["run"]["status"] == "completed", result["run"]["error"]
    assert result["run"]["output"] == "finished after the crash"
    assert result["process"]["attempt"] == 2 and result["process"]["session_id"] == session_id
    last = standin.scripted_requests[-1].body
    assert "a long task" in json.dumps(last["messages"])  # --resume: the first attempt's conversation
    assert "You are resumed" in json.dumps(last["messages"][-1])


def write(path: Path, content: str = "written by the sub-agent\n") -> Any:
    return tool_use("Write", {"file_path": str(path), "content": content})


async def test_a_write_asks_a_person_and_happens_once_approved_from_the_cli(
    orchestrator: Callable[..., Any], standin: Standin
) -> None:
    async with orchestrator() as orch:
        target = orch.workdir / "notes.txt"
        standin.add(write(target), text("The file is written."))
        run_id = await orch.spawn("write the notes")
        approval = await orch.pending_approval()
        assert (approval["run_id"], approval["tool_name"]) == (run_id, "Write")
        assert approval["input"]["file_path"] == str(target) and not target.exists()
        waiting = await orch.status(run_id)
        assert waiting["run"]["status"] == "waiting" and [w["kind"] for w in waiting["waits"]] == ["approval"]
        printed = cli(orch.db, "approvals")
        assert approval["approval_id"] in printed.stdout and "Write" in printed.stdout
        cli(orch.db, "approve", approval["approval_id"])
        result = await orch.until(run_id, ended)
        (decided,) = await orch.approvals("all")
    assert result["run"]["status"] == "completed", result["run"]["error"]
    assert target.read_text() == "written by the sub-agent\n"
    # Answered while the agent waited: it went on in the same process, and its exit completes the run.
    assert result["process"]["attempt"] == 1 and result["run"]["output"] == "The file is written."
    assert decided["status"] == "allowed" and decided["decision"]["by"] == "person"
    assert journal(result, "permission_decided")


async def test_a_denied_write_does_not_happen_and_the_model_is_told_why(
    orchestrator: Callable[..., Any], standin: Standin
) -> None:
    async with orchestrator() as orch:
        target = orch.workdir / "secrets.txt"
        standin.add(write(target), text("Understood, I will not write it."))
        run_id = await orch.spawn()
        approval = await orch.pending_approval()
        cli(orch.db, "deny", approval["approval_id"], "--message", "not that file, please")
        result = await orch.until(run_id, ended)
    assert result["run"]["status"] == "completed", result["run"]["error"]
    assert not target.exists()
    (denial,) = standin.tool_results(standin.scripted_requests[-1])
    assert denial.is_error and "not that file, please" in denial.text


async def test_a_policy_rule_allows_without_asking_and_a_worktree_edit_needs_no_approval(
    orchestrator: Callable[..., Any], standin: Standin
) -> None:
    async with orchestrator('[profiles.claude.permissions]\nallow = ["Write(./allowed/**)"]\n') as orch:
        (orch.workdir / "allowed").mkdir()
        allowed = orch.workdir / "allowed" / "by-rule.txt"
        standin.add(write(allowed), text("done by rule"))
        by_rule = await orch.until(await orch.spawn(), ended)
        assert by_rule["run"]["status"] == "completed" and allowed.exists(), by_rule["run"]["error"]

        repo = orch.workdir / "repo"
        repo.mkdir()
        git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
        for command in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "first"]):
            subprocess.run([*git, *command], check=True)
        tree: dict[str, str] = {}
        standin.add(lambda body: write(Path(tree["path"]) / "in-worktree.txt"), text("done in the worktree"))
        spawned = await call(orch.client, "spawn_subagent", prompt="edit", cwd=str(repo), worktree=True)
        tree["path"] = spawned["process"]["worktree"]
        in_tree = await orch.until(spawned["run"]["run_id"], ended)
        assert in_tree["run"]["status"] == "completed", in_tree["run"]["error"]
        assert (Path(tree["path"]) / "in-worktree.txt").exists()
        assert await orch.approvals("all") == []  # neither asked anybody
    decided = [e["detail"] for r in (by_rule, in_tree) for e in journal(r, "permission_decided")]
    assert [d.get("by") for d in decided] == ["policy", "policy"], decided


async def test_an_approval_pending_past_the_bound_lets_the_agent_exit_and_resumes_its_session(
    orchestrator: Callable[..., Any], standin: Standin
) -> None:
    async with orchestrator("[approvals]\nwait_s = 1\n") as orch:
        target = orch.workdir / "later.txt"
        standin.add(write(target), text("Waiting for approval; exiting."), write(target), text("Written at last."))
        run_id = await orch.spawn("write it when allowed")
        approval = await orch.pending_approval()
        idle = await orch.until(run_id, lambda r: r["process"]["state"] == "idle")
        assert idle["run"]["status"] == "waiting" and pid_gone(idle["process"]["pgid"])  # no process held
        told = standin.tool_results(standin.scripted_requests[1])
        assert told[0].is_error and "end this session now" in told[0].text  # told to checkpoint and exit
        cli(orch.db, "approve", approval["approval_id"])
        result = await orch.until(run_id, ended)
        asked = await orch.approvals("all")
    assert result["run"]["status"] == "completed", result["run"]["error"]
    assert target.exists() and result["process"]["attempt"] == 2
    assert result["process"]["session_id"] == idle["process"]["session_id"]
    resumed = json.dumps(standin.scripted_requests[2].body["messages"])
    assert "write it when allowed" in resumed and "was allowed" in resumed  # --resume, told the decision
    assert len(asked) == 1 and asked[0]["answered_at"]  # the retried call was answered from the decision
