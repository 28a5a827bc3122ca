"""Assembles the MCP server: tools, resources and instructions over one engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import cast

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from . import __version__
from .config import Settings
from .errors import OrchestratorError, RunNotFound
from .models import ListRunsInput, RunStatus, StatusInput
from .prompts import add_prompts
from .runtime import Engine, open_engine
from .supervisor import Supervisor, run_timers
from .tools import AppContext, engine_tools
from .tools.tasks import TasksExtension

INSTRUCTIONS = """\
Durable runs and checkpoints: work recorded here survives the end or crash of this session.
For any task with several steps or side effects:
1. start_run(name, key=<stable id of the task>): the same key later returns the same run with its
   completed steps (created=false), so a new session resumes instead of starting over.
2. Before a step with side effects: checkpoint(run_id, step, begin=true). replayed=true means it is
   done: use its output and move on. previous_outcome="unknown" means a crash interrupted it: check
   its effect before repeating it.
3. After the step: checkpoint(run_id, step, output=<result>); on failure checkpoint(..., error=...)
   and follow retry / retry_at.
4. finish_run(run_id, output=...) at the end.
To pause for a person, CI or another agent without holding anything open: wait_for_event(run_id,
step, event=<name>) returns status="waiting" after block_s; call it again with the same run and
step to keep waiting (an event is never missed). sleep(run_id, step, seconds=...) is a durable
timer. send_event(name, data) wakes waiting runs.
spawn_subagent(prompt, parent_run_id=<your run>, key=...) starts a background agent on a task as a child run
(supervised: limits, retries, restarts); wait_for_runs(run_ids, run_id, step) collects child runs.
If MCP_ORCHESTRATOR_RUN_ID names your run, you are a sub-agent: use that run.
A sub-agent waiting on an 'approval' wait asks permission for a tool call: list_approvals(run_id=<your run>)
shows your sub-agents' requests, decide_approval(approval_id, behavior, message) answers one.
send_message(run_id, text) steers a sub-agent while it works (it reads them with read_messages); status shows
its activity and cost; max_budget_usd at spawn caps a child's tree (reached: paused until set_budget).
schedule(name, cron | every_s | at, action) fires a spawn or an event later or repeatedly, with no session open.
To find unfinished work: list_runs(status=["running", "waiting"]); to inspect one: status(run_id).
"""

EngineScope = Callable[[], AbstractAsyncContextManager[Engine]]


def lend(engine: Engine) -> EngineScope:
    """A scope that hands out an engine opened (and later closed) by someone else."""

    @asynccontextmanager
    async def scope() -> AsyncIterator[Engine]:
        yield engine

    return scope


def build_server(settings: Settings, engine_scope: EngineScope | None = None) -> MCPServer:
    """The MCP server; its lifespan opens an engine, unless ``engine_scope`` lends one (see ``lend``)."""
    scope = engine_scope or (lambda: open_engine(settings))

    @asynccontextmanager
    async def lifespan(server: MCPServer) -> AsyncIterator[AppContext]:
        async with scope() as engine, anyio.create_task_group() as duties:
            duties.start_soon(run_timers, engine)
            if settings.subagent_run_id is None:  # a sub-agent's own server leaves supervising to others
                duties.start_soon(Supervisor(engine, settings).run)
            yield AppContext(engine=engine)
            duties.cancel_scope.cancel()

    mcp = MCPServer(
        "mcp-orchestrator",
        title="mcp-orchestrator: durable runs for agents",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        log_level="WARNING",
        tools=(tools := engine_tools()),
        extensions=[TasksExtension(tools)],
    )

    @mcp.resource(
        "run://{run_id}",
        name="run",
        title="A run's state",
        description="One run as the status tool shows it: the run, its steps, children and recent journal.",
        mime_type="application/json",
    )
    async def run_resource(run_id: str, ctx: Context) -> str:
        engine = cast(AppContext, ctx.request_context.lifespan_context).engine
        try:
            result = await engine.runs.status(StatusInput(run_id=run_id), budget=engine.max_result_bytes)
        except RunNotFound as exc:
            raise ResourceNotFoundError(exc.message) from exc
        except OrchestratorError as exc:
            raise ResourceError(f"{exc.code}: {exc.message}") from exc
        return result.model_dump_json()

    @mcp.resource(
        "runs://{status}",
        name="recent-runs",
        title="Recent runs",
        description="The 20 newest runs of a status (runs://running, runs://waiting, ...) or of any (runs://all), "
        "as list_runs returns them.",
        mime_type="application/json",
    )
    async def recent_runs(status: str, ctx: Context) -> str:
        engine = cast(AppContext, ctx.request_context.lifespan_context).engine
        try:
            query = ListRunsInput(status=None if status == "all" else RunStatus(status), limit=20)
        except ValueError:
            known = ", ".join(["all", *RunStatus])
            raise ResourceNotFoundError(f"runs://{status}: the status is one of {known}") from None
        try:
            return (await engine.runs.list_runs(query, budget=engine.max_result_bytes)).model_dump_json()
        except OrchestratorError as exc:
            raise ResourceError(f"{exc.code}: {exc.message}") from exc

    add_prompts(mcp)
    return mcp
