"""Sub-agents' permission requests: the policy's rules (pure), requests and decisions on both stores, and
the faces (the permission tool over a real MCP session, the CLI, the JSON API)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client

from mcp_orchestrator.errors import (
    ApprovalDecided,
    ApprovalNotFound,
    ConfigError,
    InvalidInput,
    NotAllowed,
    RunTerminal,
)
from mcp_orchestrator.models import (
    Approval,
    CancelRunInput,
    DecideApprovalInput,
    ListApprovalsInput,
    ListEventsInput,
    ListRunsInput,
    PermissionAnswer,
    PermissionPromptInput,
    SendEventInput,
    SpawnSubagentInput,
    StartRunInput,
    StatusInput,
)
from mcp_orchestrator.permissions import (
    INPUT_MAX_BYTES,
    Call,
    PermissionPolicy,
    bounded_input,
    command_parts,
    evaluate,
    parse_rule,
    suggested_rule,
)
from mcp_orchestrator.profiles import load_agents_config
from mcp_orchestrator.runtime import Engine

from .subagent_helpers import write_config
from .support import Clock, call, cli, eventually, http_token, open_store, stdio_server

HOME = "/home/someone"
anyio_test = pytest.mark.anyio


# The policy, pure.


def verdict(policy: PermissionPolicy, tool: str, value: Any, cwd: str = "/projects/repo", **extra: Any) -> str:
    return evaluate(policy, Call(tool, value, cwd, HOME, extra.get("worktree")), extra.get("granted", ())).behavior


@pytest.mark.parametrize(
    ("rule", "command", "allowed"),
    [
        ("Bash(git:*)", "git status", True),
        ("Bash(git:*)", "git", True),
        ("Bash(git:*)", "gitk --all", False),  # a word boundary, not a string prefix
        ("Bash(npm test:*)", "npm test -- -k parser", True),
        ("Bash(npm test:*)", "npm install", False),
        ("Bash(git:*)", "git add . && git commit -m 'fix: a; b'", True),  # every command of the line is git
        ("Bash(git:*)", "git status; rm -rf ~", False),
        ("Bash(git:*)", "git status | sh", False),
        ("Bash(git:*)", "git log $(rm -rf ~)", False),  # command substitution: never by a prefix
        ("Bash(git:*)", "git log `rm -rf ~`", False),
        ("Bash(git:*)", "git log > ~/.bashrc", False),  # a redirection into a file
        ("Bash(git:*)", "git log 2>&1", True),
        ("Bash(git:*)", "git log >/dev/null", True),
        ("Bash(git:*)", "git log\nrm -rf ~", False),
        ("Bash(git:*)", "(git status)", False),
        ("Bash(git:*)", "git log 'unbalanced", False),
        ("Bash(npm run *)", "npm run build", True),
        ("Bash(npm run *)", "npm test", False),
        ("Bash(ls -la)", "ls -la", True),
        ("Bash(ls -la)", "ls -la /", False),
        ("Bash(echo a && echo b)", "echo a && echo b", True),  # an exact rule: that very line
        ("Bash", "anything at all; rm -rf ~", True),
    ],
)
def test_bash_rules_allow_only_what_they_name(rule: str, command: str, allowed: bool) -> None:
    assert verdict(PermissionPolicy(allow=[rule]), "Bash", {"command": command}) == ("allow" if allowed else "ask")


@pytest.mark.parametrize(
    ("command", "denied"),
    [
        ("rm -rf build", True),
        ("git status && rm -rf ~", True),  # any command of the line
        ("echo $(rm -rf ~)", True),  # even inside a substitution
        ("git log > x; rm x", True),
        ("echo 'rm is a command'", False),  # quoted: one echo
        ("rmdir build", False),
    ],
)
def test_deny_rules_match_any_command_of_a_line(command: str, denied: bool) -> None:
    policy = PermissionPolicy(allow=["Bash"], deny=["Bash(rm:*)"])
    assert verdict(policy, "Bash", {"command": command}) == ("deny" if denied else "allow")


def test_command_parts_keep_quotes_and_refuse_what_a_prefix_cannot_vouch_for() -> None:
    assert command_parts("git commit -m 'a; b' && npm   test") == ["git commit -m 'a; b'", "npm test"]
    for opaque in ["a $(b)", "a `b`", "a > f", "a < f", "diff <(a) b", "(a)", "a\nb", "a 'b"]:
        assert command_parts(opaque) is None, opaque


def test_file_rules_are_gitignore_like_paths(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (repo / "link").symlink_to(tmp_path / "elsewhere")
    cwd = str(repo)
    policy = PermissionPolicy(
        allow=[
            "Read(./src/**)",
            "Edit(*.md)",
            f"Write(//{str(tmp_path / 'elsewhere').lstrip('/')}/*.txt)",
            "Read(~/notes/**)",
            "Grep(/src)",
        ]
    )

    def read(tool: str, path: Any) -> str:
        return verdict(policy, tool, {"file_path": path, "path": path}, cwd)

    assert read("Read", str(repo / "src" / "pkg" / "a.py")) == "allow"  # ** spans directories
    assert read("Read", "src/a.py") == "allow"  # relative to the cwd
    assert read("Read", str(repo / "src" / ".." / "secret")) == "ask"  # '..' resolved
    assert read("Read", str(repo / "other.py")) == "ask"
    assert read("Read", str(repo / "link" / "x")) == "ask"  # a symlink out of src resolved
    assert read("Edit", str(repo / "docs" / "deep" / "README.md")) == "allow"  # a bare name: any depth
    assert read("Edit", str(repo / "README.txt")) == "ask"
    assert read("Write", str(repo / "link" / "a.txt")) == "allow"  # //abs, reached through the symlink
    assert read("Write", str(tmp_path / "elsewhere" / "sub" / "a.txt")) == "ask"  # * stays in one directory
    assert read("Read", f"{HOME}/notes/todo.md") == "allow"
    assert read("Grep", str(repo / "src" / "pkg")) == "allow"  # a directory covers what is inside it
    assert read("Edit", str(repo / "src" / "a.py")) == "ask"  # Read rules do not cover Edit
    for odd in [None, 5, "", "a\x00b", ["x"], "x" * 5000]:
        assert read("Read", odd) == "ask", odd


def test_other_tools_web_and_mcp() -> None:
    policy = PermissionPolicy(
        allow=["WebFetch(domain:docs.python.org)", "WebFetch(domain:*.example.com)", "mcp__github"]
    )
    assert verdict(policy, "WebFetch", {"url": "https://docs.python.org/3/"}) == "allow"
    assert verdict(policy, "WebFetch", {"url": "https://evil.org/?docs.python.org"}) == "ask"
    assert verdict(policy, "WebFetch", {"url": "https://api.example.com/x"}) == "allow"
    assert verdict(policy, "WebFetch", {"url": "https://example.com.evil.org/"}) == "ask"
    assert verdict(policy, "WebFetch", {"url": 42}) == "ask"
    assert verdict(policy, "mcp__github__create_pr", {}) == "allow"
    assert verdict(policy, "mcp__githubx__create_pr", {}) == "ask"
    assert verdict(PermissionPolicy(allow=["mcp__github__*"]), "mcp__github__merge", {}) == "allow"
    assert verdict(PermissionPolicy(allow=["WebSearch"]), "WebSearch", {"query": "x"}) == "allow"


def test_the_order_deny_ask_allow_run_rules_worktree_default(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / ".git").mkdir(parents=True)
    (tree / "out").symlink_to(tmp_path)
    policy = PermissionPolicy(allow=["Bash(git:*)"], ask=["Bash(git push:*)"], deny=["Bash(git push --force:*)"])
    assert verdict(policy, "Bash", {"command": "git push --force origin"}) == "deny"
    assert verdict(policy, "Bash", {"command": "git push origin"}) == "ask"
    assert verdict(policy, "Bash", {"command": "git push origin"}, granted=["Bash(git push origin)"]) == "ask"
    assert verdict(policy, "Bash", {"command": "git fetch"}) == "allow"
    assert verdict(policy, "Bash", {"command": "make"}, granted=["Bash(make)"]) == "allow"
    assert verdict(policy, "Bash", {"command": "make"}) == "ask"
    inside = {"file_path": str(tree / "src" / "a.py")}
    assert verdict(policy, "Write", inside, str(tree), worktree=str(tree)) == "allow"
    assert verdict(policy, "Write", inside, str(tree)) == "ask"  # no worktree: the default
    assert verdict(policy.model_copy(update={"worktree_edits": "ask"}), "Write", inside, worktree=str(tree)) == "ask"
    for outside in [tmp_path / "a.py", tree / "out" / "a.py", tree / ".git" / "config", tree / ".." / "a.py"]:
        assert verdict(policy, "Edit", {"file_path": str(outside)}, str(tree), worktree=str(tree)) == "ask", outside
    assert verdict(policy, "Bash", {"command": "rm x"}, str(tree), worktree=str(tree)) == "ask"  # edits only
    assert verdict(PermissionPolicy(default="deny"), "Bash", {"command": "ls"}) == "deny"
    assert verdict(PermissionPolicy(default="allow", deny=["Read"]), "Read", {"file_path": "/x"}) == "deny"


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ("Bash(git:*", "is not a rule"),
        ("Bash()", "empty spec"),
        ("Task(explore)", "only Bash, WebFetch and the file tools"),
        ("WebFetch(example.com)", "domain:"),
        ("Read(**/../x)", "'..'"),
        ("mcp__github(x)", "MCP rule"),
        ("Bash(a*b:*)", "plain prefix"),
        ("Edit(x\x00)", "NUL"),
        ("x" * 5000, "1 to 4096"),
        ("", "1 to 4096"),
        (" Bash", "is not a rule"),
    ],
)
def test_bad_rules_are_named(rule: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as raised:
        parse_rule(rule)
    assert says in str(raised.value) and "permission rule" in str(raised.value)


def test_odd_rule_types_are_refused() -> None:
    for odd in [5, None, ["Bash"], {"Bash": 1}]:
        with pytest.raises(ValueError, match="is text"):
            parse_rule(odd)  # type: ignore[arg-type]


def test_suggested_rules_are_never_wider_than_the_call(tmp_path: Path) -> None:
    cwd = str(tmp_path)
    assert suggested_rule("Bash", {"command": "npm test"}, cwd, HOME) == "Bash(npm test)"
    assert suggested_rule("Bash", {"command": "rm *.o"}, cwd, HOME) is None  # '*' would widen it
    assert suggested_rule("Bash", {"command": 5}, cwd, HOME) is None
    assert suggested_rule("Write", {"file_path": "a/../b.txt"}, cwd, HOME) == f"Write(/{tmp_path / 'b.txt'})"
    assert suggested_rule("Edit", {"file_path": "we*ird"}, cwd, HOME) is None
    assert suggested_rule("WebFetch", {"url": "https://x.org/a"}, cwd, HOME) == "WebFetch(domain:x.org)"
    assert suggested_rule("mcp__github__create_pr", {}, cwd, HOME) == "mcp__github__create_pr"
    rule = suggested_rule("Bash", {"command": "npm test"}, cwd, HOME)
    assert rule is not None
    assert verdict(PermissionPolicy(allow=[rule]), "Bash", {"command": "npm test -- -x"}) == "ask"


def test_bounded_input_keeps_small_inputs_and_previews_huge_ones() -> None:
    small = {"file_path": "/x", "content": "hello"}
    assert bounded_input(small) == (small, False)
    preview, truncated = bounded_input({"file_path": "/x/y.py", "content": "a" * 1_000_000, "\x00": ["b" * 5000] * 100})
    assert truncated and isinstance(preview, str) and len(preview.encode()) <= INPUT_MAX_BYTES
    assert '"file_path": "/x/y.py"' in preview and "more characters" in preview


def test_the_config_file_sets_a_profiles_policy_and_the_bounds(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[profiles.claude.permissions]\nallow = ["Bash(git:*)", "Edit"]\ndeny = ["Read(./.env)"]\ndefault = "deny"\n'
        "[approvals]\nwait_s = 5\nexpire_s = 600\n"
    )
    config = load_agents_config(path)
    claude = config.profiles["claude"]
    assert claude.command[0] == "claude" and "--permission-prompt-tool" in claude.command  # the rest kept
    assert claude.permissions.allow == ["Bash(git:*)", "Edit"] and claude.permissions.default == "deny"
    assert claude.permissions.worktree_edits == "allow"
    assert (config.approvals.wait_s, config.approvals.expire_s) == (5, 600)
    assert load_agents_config(None).profiles["opencode"].permissions == PermissionPolicy()
    for bad, says in [
        ('[profiles.claude.permissions]\nallow = ["Bash(git:*"]\n', "profiles.claude.permissions.allow.0"),
        ('[profiles.claude.permissions]\nallow = ["Bash(git:*"]\n', "'Bash(git:*'"),
        ('[profiles.claude.permissions]\ndefault = "maybe"\n', "profiles.claude.permissions.default"),
        ('[profiles.claude.permissions]\nalow = ["Edit"]\n', "alow"),
        ('[profiles.claude.permissions]\nallow = "Edit"\n', "allow"),
        ("[approvals]\nwait_s = -1\n", "approvals.wait_s"),
    ]:
        path.write_text(bad)
        with pytest.raises(ConfigError) as raised:
            load_agents_config(path)
        assert says in raised.value.message and str(path) in raised.value.message, raised.value.message


# Requests and decisions, on both stores.

POLICY = """
[profiles.fake.permissions]
allow = ["Bash(git:*)"]
deny = ["Bash(rm:*)"]
"""


@asynccontextmanager
async def approvals_engine(
    db: str, tmp_path: Path, *, wait_s: float = 0, expire_s: float = 3600, extra: str = "", **options: Any
) -> AsyncIterator[Engine]:
    config = write_config(tmp_path, f"{POLICY}{extra}\n[approvals]\nwait_s = {wait_s}\nexpire_s = {expire_s}\n")
    async with open_store(db) as store:
        yield Engine(store, workspace=str(tmp_path), agents=load_agents_config(config), **options)


async def subagent(engine: Engine, tmp_path: Path, **spawn: Any) -> str:
    """A sub-agent of the 'fake' profile, queued (nothing here starts its process)."""
    args = SpawnSubagentInput.model_validate({"prompt": "work", "agent": "fake", "cwd": str(tmp_path), **spawn})
    return (await engine.subagents.spawn(args)).run.run_id


async def ask(engine: Engine, run_id: str | None, tool: str = "Bash", **value: Any) -> PermissionAnswer:
    args = PermissionPromptInput(tool_name=tool, input=value, tool_use_id="toolu_1", run_id=run_id)
    return await engine.approvals.request(args)


async def pending(engine: Engine, run_id: str | None = None) -> list[Approval]:
    return (await engine.approvals.list(ListApprovalsInput(run_id=run_id))).approvals


async def decide(engine: Engine, approval_id: str, behavior: str = "allow", **fields: Any) -> Approval:
    args = DecideApprovalInput.model_validate({"approval_id": approval_id, "behavior": behavior, **fields})
    return (await engine.approvals.decide(args, by="person", source="cli")).approval


def waiting_to_exit(answer: PermissionAnswer) -> bool:
    return answer.behavior == "deny" and "end this session now" in (answer.message or "")


@anyio_test
async def test_the_policy_answers_at_once_and_the_journal_says_so(db: str, tmp_path: Path) -> None:
    async with approvals_engine(db, tmp_path) as engine:
        run_id = await subagent(engine, tmp_path)
        allowed = await ask(engine, run_id, command="git status", extra={"x": None})
        assert allowed == PermissionAnswer(
            behavior="allow", updatedInput={"command": "git status", "extra": {"x": None}}
        )
        denied = await ask(engine, run_id, command="git status && rm -rf build")
        assert denied.behavior == "deny" and "Bash(rm:*)" in (denied.message or "")
        status = await engine.runs.status(StatusInput(run_id=run_id))
        decided = [entry.detail for entry in status.journal if entry.kind == "permission_decided"]
        assert [(d["behavior"], d["by"]) for d in decided] == [("allow", "policy"), ("deny", "policy")]
        assert "Bash(git:*)" in decided[0]["reason"] and decided[0]["tool_use_id"] == "toolu_1"
        assert status.waits == [] and status.run.status == "queued"
        assert await pending(engine) == []


@anyio_test
async def test_a_request_is_a_pending_wait_seen_in_status_list_runs_and_list_approvals(db: str, tmp_path: Path) -> None:
    async with approvals_engine(db, tmp_path) as engine:
        run_id = await subagent(engine, tmp_path)
        answer = await ask(engine, run_id, command="npm install left-pad")
        assert waiting_to_exit(answer) and run_id in (answer.message or "")
        (request,) = await pending(engine)
        assert request.run_id == run_id and request.status == "pending" and request.tool_name == "Bash"
        assert request.input == {"command": "npm install left-pad"} and not request.truncated
        assert request.suggested_rule == "Bash(npm install left-pad)" and request.tool_use_id == "toolu_1"
        assert request.step.startswith("approval:Bash:") and request.step.endswith(":1")
        assert request.expires_at is not None and (request.expires_at - request.requested_at).total_seconds() == 3600
        status = await engine.runs.status(StatusInput(run_id=run_id))
        assert status.run.status == "waiting"
        (wait,) = status.waits
        assert wait.kind == "approval" and wait.events == [f"approval.{request.approval_id}"]
        (step,) = status.steps
        assert (
            step.kind == "approval" and step.status == "waiting" and step.output["approval_id"] == request.approval_id
        )
        assert [run.run_id for run in (await engine.runs.list_runs(ListRunsInput(status="waiting"))).runs] == [run_id]
        again = await ask(engine, run_id, command="npm install left-pad")  # the same call: the same request
        assert waiting_to_exit(again) and len(await pending(engine)) == 1


@anyio_test
async def test_a_blocked_call_is_answered_when_decided_in_time(db: str, tmp_path: Path) -> None:
    async with approvals_engine(db, tmp_path, wait_s=30) as engine:
        run_id = await subagent(engine, tmp_path)
        answers: list[PermissionAnswer] = []
        progress: list[str] = []

        async def on_progress(done: float, total: float, message: str) -> None:
            progress.append(message)

        async def blocked(command: str) -> None:
            args = PermissionPromptInput(tool_name="Bash", input={"command": command}, run_id=run_id)
            answers.append(await engine.approvals.request(args, on_progress))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                group.start_soon(blocked, "make deploy")
                (request,) = await eventually(lambda: pending(engine))
                await eventually(lambda: progress, timeout=10)  # it blocks and says so
                await decide(engine, request.approval_id, "allow")
        assert answers == [PermissionAnswer(behavior="allow", updatedInput={"command": "make deploy"})]
        assert "waiting for a decision on Bash" in progress[0]
        (decided,) = (await engine.approvals.list(ListApprovalsInput(status="decided"))).approvals
        assert decided.status == "allowed" and decided.answered_at is not None
        assert decided.decision is not None and (decided.decision.by, decided.decision.source) == ("person", "cli")
        assert (await engine.runs.status(StatusInput(run_id=run_id))).run.status == "running"  # no longer waiting

        answers.clear()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                group.start_soon(blocked, "make release")
                (request,) = await eventually(lambda: pending(engine))
                await decide(engine, request.approval_id, "deny", message="not on a Friday")
        (denied,) = answers
        assert denied.behavior == "deny" and "A person denied this Bash call: not on a Friday" in (denied.message or "")


@anyio_test
async def test_past_the_bound_then_decided_the_retry_is_answered_and_a_call_decision_is_spent(
    db: str, tmp_path: Path
) -> None:
    async with approvals_engine(db, tmp_path, wait_s=0.2) as engine:
        run_id = await subagent(engine, tmp_path)
        assert waiting_to_exit(await ask(engine, run_id, command="make"))
        (request,) = await pending(engine)
        await decide(engine, request.approval_id, "allow")  # while the agent is gone
        assert (await engine.runs.status(StatusInput(run_id=run_id))).run.status == "running"  # ready to resume
        retried = await ask(engine, run_id, command="make")  # answered at once, from the decision
        assert retried == PermissionAnswer(behavior="allow", updatedInput={"command": "make"})
        third = await ask(engine, run_id, command="make")  # one call was allowed, not every 'make'
        assert waiting_to_exit(third)
        (second,) = await pending(engine)
        assert second.approval_id != request.approval_id and second.step == request.step[:-1] + "2"
        other = await ask(engine, run_id, command="make test")  # another call: its own request
        assert waiting_to_exit(other) and len(await pending(engine)) == 2


@anyio_test
async def test_a_rule_decision_allows_the_next_matching_calls_of_the_run_only(db: str, tmp_path: Path) -> None:
    async with approvals_engine(db, tmp_path) as engine:
        run_id, sibling = await subagent(engine, tmp_path), await subagent(engine, tmp_path)
        await ask(engine, run_id, command="npm test")
        (request,) = await pending(engine)
        decided = await decide(engine, request.approval_id, "allow", scope="rule")
        assert decided.decision is not None and decided.decision.rule == "Bash(npm test)"  # the suggested rule
        assert (await ask(engine, run_id, command="npm test")).behavior == "allow"  # answered from the decision
        assert (await ask(engine, run_id, command="npm test")).behavior == "allow"  # by the rule, no request
        assert waiting_to_exit(await ask(engine, run_id, command="npm test -- --watch"))  # not wider
        assert waiting_to_exit(await ask(engine, sibling, command="npm test"))  # another run: not granted
        for request in await pending(engine):
            await decide(engine, request.approval_id, "allow", scope="rule", rule="Bash(npm test:*)")
        assert (await ask(engine, run_id, command="npm test -- -k parser")).behavior == "allow"
        await ask(engine, run_id, command="curl evil.sh")
        (curl,) = await pending(engine, run_id)
        await decide(engine, curl.approval_id, "deny", scope="rule", rule="Bash(curl:*)", message="no network")
        await ask(engine, run_id, command="curl evil.sh")  # the one answer the decision owes
        assert (await ask(engine, run_id, command="curl other.sh")).behavior == "deny"  # denied for the run


@anyio_test
async def test_a_pending_request_the_policy_now_covers_is_decided_by_it(db: str, tmp_path: Path) -> None:
    async with approvals_engine(db, tmp_path) as engine:
        run_id = await subagent(engine, tmp_path)
        await ask(engine, run_id, command="make a")
        await ask(engine, run_id, command="make b")
        first, second = await pending(engine)  # newest first: b, a
        await decide(engine, second.approval_id, "allow", scope="rule", rule="Bash(make:*)")
        assert (await ask(engine, run_id, command="make b")).behavior == "allow"  # b's request ends by the rule
        assert await pending(engine) == []
        (by_policy,) = [
            a
            for a in (await engine.approvals.list(ListApprovalsInput(status="all"))).approvals
            if a.approval_id == first.approval_id
        ]
        assert by_policy.status == "allowed" and by_policy.answered_at is not None
        assert by_policy.decision is not None and by_policy.decision.by == "policy"
        own = Engine(engine.store, agents=engine.approvals.config, subagent_run_id=run_id)
        with pytest.raises(NotAllowed, match="leave run_id out"):  # a sub-agent's server asks for its own run
            await ask(own, await subagent(engine, tmp_path), command="make c")
        assert (await ask(own, None, command="make c")).behavior == "allow"


@anyio_test
async def test_an_undecided_request_expires_denied_by_timeout(db: str, tmp_path: Path) -> None:
    clock = Clock()
    async with approvals_engine(db, tmp_path, expire_s=60, clock=clock) as engine:
        run_id = await subagent(engine, tmp_path)
        assert waiting_to_exit(await ask(engine, run_id, command="make"))
        clock.advance(61)
        assert await engine.events.fire_due_waits() == 1
        (expired,) = (await engine.approvals.list(ListApprovalsInput(status="decided"))).approvals
        assert expired.status == "expired" and expired.decision is not None
        assert (expired.decision.behavior, expired.decision.by, expired.decision.source) == (
            "deny",
            "timeout",
            "expiry",
        )
        answer = await ask(engine, run_id, command="make")
        assert answer.behavior == "deny" and "expired" in (answer.message or "")
        events = (await engine.events.list_events(ListEventsInput(name=f"approval.{expired.approval_id}"))).events
        assert [event.source for event in events] == ["system"]  # the expiry is a decision event too
        with pytest.raises(ApprovalDecided, match="decided already"):
            await decide(engine, expired.approval_id)


@anyio_test
async def test_a_plain_event_decides_a_request_and_bad_data_is_refused(db: str, tmp_path: Path) -> None:
    async with approvals_engine(db, tmp_path) as engine:
        run_id = await subagent(engine, tmp_path)
        await ask(engine, run_id, command="make")
        (request,) = await pending(engine)
        name = f"approval.{request.approval_id}"
        for bad in [
            None,
            "yes",
            {"behavior": "maybe"},
            {"behavior": "allow", "scope": "call", "rule": "Bash(x)"},
            {"behavior": "allow", "extra": 1},
            {"behavior": "allow", "scope": "rule", "rule": "Bash("},
        ]:
            with pytest.raises(InvalidInput, match="decision"):
                await engine.events.send_event(SendEventInput(name=name, data=bad), source="webhook")
        assert (await engine.events.list_events(ListEventsInput(name=name))).events == []  # nothing stored
        assert len(await pending(engine)) == 1
        sent = await engine.events.send_event(
            SendEventInput(name=name, data={"behavior": "deny", "message": "use the staging cluster"}, id="hook-1"),
            source="webhook",
        )
        assert sent.woken_run_ids == [run_id]
        answer = await ask(engine, run_id, command="make")
        assert answer.behavior == "deny" and "use the staging cluster" in (answer.message or "")
        (decided,) = (await engine.approvals.list(ListApprovalsInput(status="all"))).approvals
        assert decided.decision is not None and decided.decision.event_id == "hook-1"
        assert (decided.decision.by, decided.decision.source) == ("person", "webhook")


@anyio_test
async def test_deciding_errors_name_what_to_fix(db: str, tmp_path: Path) -> None:
    async with approvals_engine(db, tmp_path) as engine:
        run_id = await subagent(engine, tmp_path)
        with pytest.raises(ApprovalNotFound, match="no permission request"):
            await decide(engine, "01NOSUCHAPPROVAL")
        await ask(engine, run_id, command="rmdir *.tmp")  # a '*': no rule can be suggested
        (request,) = await pending(engine)
        with pytest.raises(InvalidInput, match="no rule can be suggested"):
            await decide(engine, request.approval_id, scope="rule")
        with pytest.raises(ValueError, match="scope='rule'"):
            DecideApprovalInput(approval_id=request.approval_id, behavior="allow", rule="Bash(x)")
        await decide(engine, request.approval_id, "deny")
        with pytest.raises(ApprovalDecided, match=r"decided already \(deny, by person"):
            await decide(engine, request.approval_id, "allow")
        with pytest.raises(InvalidInput, match="run_id"):
            await ask(engine, None, command="ls")
        await engine.runs.cancel_run(CancelRunInput(run_id=run_id))
        with pytest.raises(RunTerminal):
            await ask(engine, run_id, command="ls")


@anyio_test
async def test_a_sub_agent_decides_only_its_descendants_requests(db: str, tmp_path: Path) -> None:
    async with approvals_engine(db, tmp_path) as engine:
        parent = (await engine.runs.start_run(StartRunInput(name="lead"))).run.run_id
        child = await subagent(engine, tmp_path, parent_run_id=parent)
        grandchild = await subagent(engine, tmp_path, parent_run_id=child)
        stranger = await subagent(engine, tmp_path)
        for run_id in (parent, child, grandchild, stranger):
            await ask(engine, run_id, command=f"make {run_id}")
        mine = {a.run_id: a for a in await pending(engine, parent)}
        assert set(mine) == {parent, child, grandchild}  # its own and its descendants'
        assert {a.run_id for a in await pending(engine)} == {parent, child, grandchild, stranger}
        by_agent = Engine(engine.store, agents=engine.approvals.config, subagent_run_id=parent)
        args = DecideApprovalInput(approval_id=mine[grandchild].approval_id, behavior="allow")
        done = await by_agent.approvals.decide(args, by="agent", source="tool")
        assert done.approval.decision is not None and done.approval.decision.source == f"tool:run {parent}"
        others = {a.run_id: a for a in await pending(engine)}
        for run_id in (parent, stranger):  # never its own request, nor another tree's
            with pytest.raises(NotAllowed, match="not below run"):
                await by_agent.approvals.decide(
                    DecideApprovalInput(approval_id=others[run_id].approval_id, behavior="allow"),
                    by="agent",
                    source="tool",
                )


@anyio_test
async def test_edits_inside_a_worktree_need_no_approval(db: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "README").write_text("hello\n")
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    async with approvals_engine(db, tmp_path) as engine:
        run_id = await subagent(engine, tmp_path, cwd=str(repo), worktree=True)
        tree = Path((await engine.runs.status(StatusInput(run_id=run_id))).process.worktree or "")  # type: ignore[union-attr]
        (tree / "escape").symlink_to(repo)
        inside = await ask(engine, run_id, "Write", file_path="src/new.py", content="x = 1\n")
        assert inside == PermissionAnswer(
            behavior="allow", updatedInput={"file_path": "src/new.py", "content": "x = 1\n"}
        )
        assert (
            await ask(engine, run_id, "Edit", file_path=str(tree / "README"), old_string="a", new_string="b")
        ).behavior == "allow"
        for outside in [repo / "README", tree / "escape" / "README", tree / ".git", tree / ".." / "x"]:
            assert waiting_to_exit(await ask(engine, run_id, "Write", file_path=str(outside), content="")), outside
        assert waiting_to_exit(await ask(engine, run_id, "Bash", command="touch src/x.py"))  # edits only


@anyio_test
async def test_hostile_requests_get_specific_errors_and_store_nothing_broken(db: str, tmp_path: Path) -> None:
    async with approvals_engine(db, tmp_path) as engine:
        run_id = await subagent(engine, tmp_path)
        for tool, value, says in [
            ("Bash; rm -rf ~", {}, "not a tool name"),
            ("", {}, "at least 1"),
            ("x" * 161, {}, "at most 160"),
            ("Ba\x00sh", {}, "NUL"),
            ("Bash", ["not", "an", "object"], "dictionary"),
            ("Bash", {"deep": _nested(100)}, "nests"),
            ("Bash", {"n": float("nan")}, "finite"),
            (5, {}, "string"),
        ]:
            with pytest.raises(ValueError, match=says):
                PermissionPromptInput.model_validate({"tool_name": tool, "input": value, "run_id": run_id})
        huge = {"file_path": "big.bin", "content": "\x00" + "a" * 5_000_000}  # a NUL is fine inside JSON
        assert waiting_to_exit(await ask(engine, run_id, "Write", **huge))
        (request,) = await pending(engine)
        assert request.truncated and isinstance(request.input, str) and "big.bin" in request.input
        step = (await engine.runs.status(StatusInput(run_id=run_id))).steps[0]
        assert len(json.dumps(step.output)) < 2 * 16 * 1024
        await decide(engine, request.approval_id, "allow")
        allowed = await ask(engine, run_id, "Write", **huge)  # the full input back, not the preview
        assert allowed.behavior == "allow" and allowed.updatedInput == huge
        odd = await ask(engine, run_id, "mcp__odd-server.v2__do_it", text="nul\x00 and \u202e bidi", n=None)
        assert waiting_to_exit(odd)
        (request,) = await pending(engine)
        assert request.input == {"text": "nul\x00 and \u202e bidi", "n": None}
        assert request.suggested_rule == "mcp__odd-server.v2__do_it"


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@anyio_test
async def test_listing_by_run_tree_and_status_and_requests_abandoned_by_their_run(db: str, tmp_path: Path) -> None:
    async with approvals_engine(db, tmp_path) as engine:
        first, second = await subagent(engine, tmp_path), await subagent(engine, tmp_path)
        for command in ("a", "b", "c"):
            await ask(engine, first, command=command)
        await ask(engine, second, command="d")
        listed = await pending(engine)
        assert [a.input for a in listed] == [{"command": c} for c in "dcba"]  # newest first
        await decide(engine, listed[1].approval_id, "deny")
        assert [a.input["command"] for a in await pending(engine, first)] == ["b", "a"]  # type: ignore[index]
        decided = (await engine.approvals.list(ListApprovalsInput(status="decided"))).approvals
        assert [a.status for a in decided] == ["denied"]
        await engine.runs.cancel_run(CancelRunInput(run_id=first))
        assert [a.run_id for a in await pending(engine)] == [second]
        every = (await engine.approvals.list(ListApprovalsInput(status="all", run_id=first))).approvals
        assert sorted(a.status for a in every) == ["abandoned", "abandoned", "denied"]
        assert len((await engine.approvals.list(ListApprovalsInput(status="all", limit=2))).approvals) == 2
        abandoned = next(a for a in every if a.status == "abandoned")
        with pytest.raises(ApprovalNotFound):
            await decide(engine, abandoned.approval_id)


# The faces: a real MCP session, the CLI, the JSON API.


@anyio_test
@pytest.mark.processes
async def test_the_permission_tool_over_mcp_answers_one_text_block_as_claude_code_expects(
    db: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, "[approvals]\nwait_s = 0.5\n")
    env = {"MCP_ORCHESTRATOR_CONFIG": str(config)}
    async with Client(stdio_server(db, **env)) as lead:
        run_id = (await call(lead, "start_run", name="agent"))["run"]["run_id"]
        async with Client(stdio_server(db, MCP_ORCHESTRATOR_RUN_ID=run_id, **env)) as agent:
            tools = {tool.name: tool for tool in (await agent.list_tools()).tools}
            assert tools["permission_prompt"].output_schema is None
            arguments = {"tool_name": "Write", "input": {"file_path": "notes.md", "content": "hi"}, "tool_use_id": "t1"}
            first = await agent.call_tool("permission_prompt", arguments)  # no run_id: the server's own
            assert not first.is_error and first.structured_content is None and len(first.content) == 1
            assert first.content[0].type == "text"
            answer = json.loads(first.content[0].text)
            assert set(answer) == {"behavior", "message"} and answer["behavior"] == "deny"
            assert "checkpoint" in answer["message"]

            listed = await call(lead, "list_approvals", run_id=run_id)
            (request,) = listed["approvals"]
            decided = await call(lead, "decide_approval", approval_id=request["approval_id"], behavior="allow")
            assert decided["approval"]["decision"]["by"] == "agent"

            again = await agent.call_tool("permission_prompt", arguments)
            assert again.structured_content is None and len(again.content) == 1
            assert json.loads(again.content[0].text) == {
                "behavior": "allow",
                "updatedInput": {"file_path": "notes.md", "content": "hi"},
            }
            refused = await agent.call_tool("permission_prompt", {**arguments, "tool_name": "Wr ite"})
            assert refused.is_error and "invalid_input: " in refused.content[0].text
            own = await agent.call_tool("decide_approval", {"approval_id": request["approval_id"], "behavior": "allow"})
            assert own.is_error and "approval_decided" in own.content[0].text


@anyio_test
@pytest.mark.processes
async def test_cli_lists_approves_and_denies(db: str, tmp_path: Path) -> None:
    async with approvals_engine(db, tmp_path) as engine:
        run_id = await subagent(engine, tmp_path)
        for command in ("npm test", "curl example.com"):
            await ask(engine, run_id, command=command)
        table = cli(db, "approvals").stdout
        assert "npm test" in table and "curl example.com" in table and "pending" in table
        listed = json.loads(cli(db, "approvals", "--run", run_id, "--json").stdout)["approvals"]
        by_command = {a["input"]["command"]: a["approval_id"] for a in listed}
        approved = cli(db, "approve", by_command["npm test"], "--for-run").stdout
        assert "allowed Bash npm test" in approved and "every call matching Bash(npm test)" in approved
        denied = json.loads(cli(db, "deny", by_command["curl example.com"], "--message", "no network", "--json").stdout)
        assert denied["approval"]["status"] == "denied" and denied["approval"]["decision"]["message"] == "no network"
        assert cli(db, "approvals").stdout.strip() == "no pending permission requests"
        assert "denied by person" in cli(db, "approvals", "--all").stdout
        again = cli(db, "approve", by_command["npm test"], check=False)
        assert again.returncode == 1 and again.stderr.startswith("approval_decided: ")
        both = cli(db, "approve", "X", "--for-run", "--rule", "Bash(ls)", check=False)
        assert both.returncode == 1 and "not both" in both.stderr
        bad = cli(db, "approve", "X", "--rule", "Bash(", check=False)
        assert bad.returncode == 1 and bad.stderr.startswith("invalid_input: ") and "'Bash('" in bad.stderr
        assert (await ask(engine, run_id, command="npm test")).behavior == "allow"


@pytest.fixture
async def api(http_server: Callable[..., str], private_state_dir: Path) -> AsyncIterator[httpx2.AsyncClient]:
    base = http_server()
    headers = {"Authorization": f"Bearer {http_token(private_state_dir)}", "Content-Type": "application/json"}
    async with httpx2.AsyncClient(base_url=base, headers=headers) as client:
        yield client


@anyio_test
@pytest.mark.processes
async def test_json_api_lists_and_decides(db: str, tmp_path: Path, api: httpx2.AsyncClient) -> None:
    async with approvals_engine(db, tmp_path) as engine:
        run_id = (await engine.runs.start_run(StartRunInput(name="not a sub-agent"))).run.run_id  # nothing to launch
        await ask(engine, run_id, command="make")
        listed = (await api.get("/api/approvals", params={"run": run_id})).json()
        assert listed == (await engine.approvals.list(ListApprovalsInput(run_id=run_id))).model_dump(mode="json")
        approval_id = listed["approvals"][0]["approval_id"]
        path = f"/api/approvals/{approval_id}/decision"
        async with httpx2.AsyncClient(base_url=str(api.base_url)) as stranger:
            assert (await stranger.post(path, json={"behavior": "allow"})).status_code == 401
        bad = await api.post(path, json={"behavior": "maybe"})
        assert bad.status_code == 400 and "behavior" in bad.json()["message"]
        decided = await api.post(path, json={"behavior": "allow", "scope": "rule", "message": "ok"})
        assert decided.status_code == 200, decided.text
        decision = decided.json()["approval"]["decision"]
        assert (decision["by"], decision["source"], decision["rule"]) == ("person", "api", "Bash(make)")
        assert (await api.post(path, json={"behavior": "deny"})).status_code == 409
        unknown = await api.post("/api/approvals/nope/decision", json={"behavior": "deny"})
        assert unknown.status_code == 404 and unknown.json()["error"] == "approval_not_found"
        assert (await api.get("/api/approvals", params={"status": "all"})).json()["approvals"][0]["status"] == "allowed"
        assert (await ask(engine, run_id, command="make")).behavior == "allow"
