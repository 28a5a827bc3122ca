"""Sub-agent tools: start background agents whose processes the orchestrator supervises."""

from __future__ import annotations

from mcp.types import ToolAnnotations

from ..models import SpawnSubagentInput, SpawnSubagentResult
from ..runtime import Engine
from ._base import engine_tool


@engine_tool(
    SpawnSubagentInput,
    SpawnSubagentResult,
    title="Spawn a background sub-agent",
    annotations=ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
    ),
)
async def spawn_subagent(engine: Engine, args: SpawnSubagentInput) -> SpawnSubagentResult:
    """Start a background sub-agent (Claude Code, OpenCode or any command) on a task, as a child run.

    Use it to hand off work that runs in parallel or outlives this session: the orchestrator starts
    the agent's process (within concurrency limits), retries it if it crashes, kills it on timeout
    or cancel_run, and restarts it when a wait of its own ends. The sub-agent gets the orchestrator's
    tools and its own run_id, so it checkpoints and finishes its run itself; if it just exits, exit
    code 0 completes the run with its final output. Pass parent_run_id=<your run> and collect results
    with wait_for_runs(run_ids=[...], run_id=<your run>, step=...). Give a `key` to make the call
    safe to repeat after a crash.

    `max_budget_usd` caps what the sub-agent and everything it spawns may spend together (inside
    your own run's budget, if it has one), `max_turns` its model turns. A budget reached pauses the
    run (status "waiting", a 'budget' wait), it does not fail it: raise it with set_budget and the
    agent goes on where it stopped. send_message steers it while it works; status(run_id) shows its
    activity and what it has spent.

    Returns the child `run` (status "queued" until its process starts), `created`, and `process`
    (profile, attempt, pid once started). status(run_id) shows its process and the tail of its log.
    A client that takes MCP tasks gets a task instead, ending when the run ends, with its output.

    Example: spawn_subagent(prompt="Write tests for parser.py; finish with the file names.",
    parent_run_id="01J...", key="tests-parser") -> {"run": {"run_id": "01K...", "status": "queued"}, ...}
    """
    return await engine.subagents.spawn(args)
