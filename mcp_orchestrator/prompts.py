"""The server's MCP prompts: requests a person picks in a client, each telling the model which tools to call.

Claude Code lists them as slash commands (``/mcp__orchestrator__runs`` when the server is registered as
``orchestrator``). They stay thin: text that says what to do, with the facts it needs embedded. ``runs``
and ``resume`` embed the workspace's summary, the same text the Claude Code plugin's SessionStart hook
gives a new session (``summary.unfinished_work``). A bad argument is refused with an invalid-params
error that says what to pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, cast

from mcp import MCPError
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.prompts.base import Message, Prompt
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS, InputRequiredResult
from pydantic import Field, ValidationError

from .errors import OrchestratorError, invalid_input_from
from .models import RunStatus, StatusInput, StatusResult, StepStatus
from .runtime import Engine
from .summary import unfinished_work
from .tools import AppContext

WORKSPACE_MAX = 4096
F = TypeVar("F", bound=Callable[..., Any])
_PATTERN = """\
To resume a run: start_run(name, key) with its name and key returns the same run (created=false) and its steps; \
a completed step is done (use its output, do not repeat it). Before each remaining step with side effects call \
checkpoint(run_id, step, begin=true): replayed=true means done, previous_outcome="unknown" means an attempt \
was cut off (check its effect before repeating it). Record each result with checkpoint(run_id, step, output=...). \
A pending wait is picked up by calling its tool again with the same run and step (wait_for_event, sleep, \
wait_for_runs). finish_run(run_id, output=...) at the end."""


def add_prompts(mcp: MCPServer) -> None:
    """Register the prompts: runs, approvals, resume."""

    @_prompt(
        mcp,
        name="runs",
        title="Runs of this workspace",
        description="Report the unfinished durable runs of this workspace (running, waiting and for what, paused, "
        "failed in the last day) and the permission requests they wait on.",
    )
    async def runs(
        ctx: Context,
        workspace: Annotated[
            str | None, Field(description="Project directory (default: the server's workspace).")
        ] = None,
    ) -> str:
        engine = _engine(ctx)
        where = _workspace(engine, workspace)
        summary = await _summary(engine, where)
        return (
            f"{summary}\n\nReport the state of this workspace's durable runs to the user in a short list, from the "
            "summary above: first what needs someone (a permission request, a budget, an event to send), then what "
            "is working, then what failed and why. For more, call "
            f'list_runs(workspace={json.dumps(where)}, status=["waiting", "running", "queued"]) and '
            "status(run_id) of a run the user asks about. Do not resume, retry, cancel or decide anything unless "
            "the user asks."
        )

    @_prompt(
        mcp,
        name="approvals",
        title="Permission requests waiting",
        description="Show the sub-agents' permission requests that wait for a decision, and decide the ones the "
        "user decides.",
    )
    async def approvals(
        run_id: Annotated[
            str | None, Field(description="Only the requests of this run and its descendants (default: all).")
        ] = None,
    ) -> str:
        which = f'status="pending", run_id={json.dumps(_run_id(run_id))}' if run_id else 'status="pending"'
        return (
            f"Call list_approvals({which}) and show the user each request waiting for a decision: the run that "
            "asks, the tool, what the call would do (its command, file or input) and the suggested rule. If none "
            "is pending, say so. Then ask the user what to decide, and decide only what the user decides: "
            'decide_approval(approval_id, behavior="allow" or "deny", message=<for a deny: why, and what to do '
            'instead>); with scope="rule" an allow also covers the suggested rule (or rule=...) for the rest of '
            "that run. The sub-agent goes on, or is resumed, with the decision."
        )

    @_prompt(
        mcp,
        name="resume",
        title="Resume a run",
        description="Resume an unfinished run where it stopped: the one given, or one of this workspace's, "
        "checking each step before repeating it.",
    )
    async def resume(
        ctx: Context,
        run_id: Annotated[
            str | None, Field(description="The run to resume (default: ask, from this workspace's).")
        ] = None,
    ) -> str:
        engine = _engine(ctx)
        if not run_id:
            summary = await _summary(engine, _workspace(engine, None))
            return (
                f"{summary}\n\nAsk the user which of these runs to resume (if only one is unfinished, confirm it), "
                f"then read it with status(run_id) and go on with it.\n{_PATTERN}"
            )
        try:
            query = StatusInput(
                run_id=_run_id(run_id), journal_limit=0, log_lines=0, activity_limit=0, include_outputs=False
            )
            result = await engine.runs.status(query, budget=engine.max_result_bytes)  # a page: names and statuses
        except ValidationError as exc:
            raise _refusal(invalid_input_from(exc, "run_id")) from None
        except OrchestratorError as exc:
            raise _refusal(exc) from None
        return _resume_one(result)


class _CheckedPrompt(Prompt):
    """A prompt that refuses an argument it does not take by name (the SDK's own refusal is an internal error)."""

    async def render(
        self, arguments: dict[str, Any] | None, context: Context[Any, Any]
    ) -> list[Message] | InputRequiredResult:
        known = sorted(argument.name for argument in self.arguments or [])
        unknown = sorted(set(arguments or {}) - set(known))
        if unknown:
            takes = f"takes only {', '.join(known)}" if known else "takes no arguments"
            raise MCPError(INVALID_PARAMS, f"prompt {self.name!r} {takes}; leave out {', '.join(unknown)}")
        return await super().render(arguments, context)


def _prompt(mcp: MCPServer, *, name: str, title: str, description: str) -> Callable[[F], F]:
    """``@mcp.prompt``, with unknown arguments refused by name."""

    def register(fn: F) -> F:
        mcp.add_prompt(_CheckedPrompt.from_function(fn, name=name, title=title, description=description))
        return fn

    return register


def _resume_one(result: StatusResult) -> str:
    run = result.run
    statuses = {**(result.earlier_steps or {}), **{step.step: step.status for step in result.steps}}
    done = [name for name, status in statuses.items() if status == StepStatus.COMPLETED]
    open_steps = [f"{name} ({status})" for name, status in statuses.items() if status != StepStatus.COMPLETED]
    facts = [
        f"Run {run.run_id}: name {json.dumps(run.name)}, key {json.dumps(run.key)}, status {run.status}.",
        f"Completed steps: {', '.join(json.dumps(name) for name in done) or 'none'}.",
    ]
    if len(statuses) < result.steps_total:
        facts.append(f"(The latest {len(statuses)} of its {result.steps_total} steps; status(run_id) pages back.)")
    if open_steps:
        facts.append(f"Steps not completed: {', '.join(open_steps)}.")
    if result.waits:
        facts.append(f"Pending waits: {', '.join(f'{w.step} ({w.kind})' for w in result.waits)}.")
    if run.status == RunStatus.COMPLETED:
        facts.append("It has completed: there is nothing to resume; tell the user its output (status shows it).")
    elif run.status.terminal:
        facts.append(
            f"It has {'failed' if run.status == RunStatus.FAILED else 'been cancelled'}: call status(run_id) to "
            "see why, and tell the user. Only if the user wants it again, retry_run(run_id) makes it live again "
            "from its last completed step; then resume it as below."
        )
    else:
        facts.append("Call status(run_id) for every step and its output, then go on with it.")
    return "\n".join([*facts, _PATTERN])


def _engine(ctx: Context) -> Engine:
    return cast(AppContext, ctx.request_context.lifespan_context).engine


def _workspace(engine: Engine, given: str | None) -> str:
    if given is None or given == "":
        return engine.workspace or os.getcwd()
    if len(given) > WORKSPACE_MAX or "\x00" in given:
        raise MCPError(
            INVALID_PARAMS,
            f"workspace: give a project directory of at most {WORKSPACE_MAX} characters without NUL, "
            "or leave it out for the server's own",
        )
    return given


def _run_id(run_id: str) -> str:
    if len(run_id) > 64 or not run_id.isprintable():
        raise MCPError(INVALID_PARAMS, f"run_id {run_id[:40]!r}: give a run's id as start_run or list_runs shows it")
    return run_id


async def _summary(engine: Engine, workspace: str) -> str:
    try:
        summary = await unfinished_work(engine, workspace)
    except OrchestratorError as exc:
        raise _refusal(exc) from None
    return summary or (
        f"No unfinished work in this workspace ({workspace}): no run is running, queued, waiting or paused, and "
        "none failed in the last 24 hours."
    )


def _refusal(error: OrchestratorError) -> MCPError:
    """The caller's mistake as invalid params; the store's trouble (or a bug) as an internal error."""
    return MCPError(INVALID_PARAMS if error.http_status < 500 else INTERNAL_ERROR, f"{error.code}: {error.message}")
