"""The MCP tasks extension (``io.modelcontextprotocol/tasks``, SEP-2663, protocol 2026-07-28).

A client that declares the extension on a call to spawn_subagent, wait_for_runs, wait_for_event or
sleep gets a task at once (``resultType: "task"``) instead of a call that blocks, and polls it with
``tasks/get``; ``tasks/cancel`` and ``tasks/update`` as the extension says. While a spawned sub-agent
(or one below it) waits for a permission decision, its task is ``input_required`` with each request as a
form elicitation, which ``tasks/update`` answers: the person at the client decides. A call that is done at
once (the event is already there) answers as usual: the server decides per call. A task is a record
of the call (``services.tasks``): ``tasks/get`` asks its run or wait again, as the model would by
calling the tool again, so every process on the store answers for it, after any restart. A client
that does not declare the extension keeps today's bounded blocking calls.

The 2026-07-28 protocol has no per-tool ``execution.taskSupport`` (SEP-2663 leaves the choice to the
server, per call); the descriptions of these tools say they may answer with a task.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from mcp import MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS, CallToolRequestParams, CallToolResult, RequestParams, TextContent
from pydantic import BaseModel, Field, JsonValue, ValidationError

from ..errors import (
    ApprovalDecided,
    ApprovalNotFound,
    OrchestratorError,
    StoreError,
    TaskNotFound,
    invalid_input_from,
)
from ..models import (
    Approval,
    DecideApprovalInput,
    ListApprovalsInput,
    SpawnSubagentResult,
    TaskRecord,
    TaskTool,
)
from ..runtime import Engine
from ..services.sizing import fit
from ._base import TOOLS, AppContext, call_primitive, error_text

EXTENSION = "io.modelcontextprotocol/tasks"
MODERN = frozenset({"2026-07-28"})
TASK_TOOLS: tuple[TaskTool, ...] = ("spawn_subagent", "wait_for_runs", "wait_for_event", "sleep")
# How often a client should ask: a sub-agent works for minutes, a wait may end any second.
POLL_INTERVAL_MS = {"spawn_subagent": 2000, "wait_for_runs": 1000, "wait_for_event": 1000, "sleep": 1000}
NOT_YET = frozenset({"waiting", "sleeping"})  # the wait tools' "call again"
TASK_ID = re.compile(r"task-[0-9a-f]{32}")  # what services.tasks makes
ASKED_AT_ONCE = 10  # permission requests one tasks/get shows (the rest come as these are decided)
CALL_SHOWN = 400  # characters of a call's arguments in a permission request
APPROVAL_FORM: dict[str, JsonValue] = {
    "type": "object",
    "properties": {
        "decision": {"type": "string", "title": "Decision", "enum": ["allow", "deny"]},
        "message": {"type": "string", "title": "Message to the agent (optional)", "maxLength": 2000},
    },
    "required": ["decision"],
}


class TaskIdParams(RequestParams):
    task_id: str = ""  # checked by the handler (``_task``), which says what is wrong with it


class UpdateTaskParams(TaskIdParams):
    input_responses: dict[str, Any] = Field(default_factory=dict)


class TasksExtension(Extension):
    """Serves the long tools as tasks to clients that declare the extension (see the module docstring)."""

    identifier = EXTENSION

    def __init__(self, tools: Sequence[Tool]) -> None:
        # The registered MCP tools, to render a task's result exactly as the tool's own answer.
        self._tools = {tool.name: tool for tool in tools if tool.name in TASK_TOOLS}
        self._engine_tools = {tool.fn.__name__: tool for tool in TOOLS if tool.fn.__name__ in TASK_TOOLS}

    def methods(self) -> Sequence[MethodBinding]:
        return (
            MethodBinding("tasks/get", TaskIdParams, self._get, protocol_versions=MODERN),
            MethodBinding("tasks/update", UpdateTaskParams, self._update, protocol_versions=MODERN),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel, protocol_versions=MODERN),
        )

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if params.name not in self._tools or not _declared(ctx):
            return await call_next(ctx)
        tool = cast(TaskTool, params.name)
        engine = _engine(ctx)
        arguments = dict(params.arguments or {})
        if tool != "spawn_subagent":
            arguments["block_s"] = 0  # look once: a task only when the wait has not ended yet
        try:
            look = _look(tool, await self._call(engine, tool, arguments))
        except ToolError as exc:  # refused as the tool refuses it: no task
            return _tool_error(str(exc))
        if look.ended:  # done at once (the event was there, the key's run had ended): the answer itself
            return self._render(tool, look.result)
        if isinstance(look.result, SpawnSubagentResult):
            spawned = look.result
            task = await engine.tasks.create(tool, arguments, spawned.run.run_id, created=spawned.created)
        else:
            waiting_run = arguments.get("run_id") or cast(list[str], arguments["run_ids"])[0]
            task = await engine.tasks.create(tool, arguments, str(waiting_run))
        return {"resultType": "task", **_task_view(task, look.message)}

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        engine = _engine(ctx)
        task = await _task(engine, params.task_id)
        if task.status == "cancelled":
            return {"resultType": "complete", **_task_view(task, "cancelled")}
        try:
            look = await self._poll(engine, task)
        except ToolError as exc:
            if isinstance(exc.__cause__, StoreError):  # the store could not answer now: not the call's outcome
                raise MCPError(code=INTERNAL_ERROR, message=f"{exc}; ask tasks/get again") from exc
            # The call ended in an error the tool reports (its run was cancelled ...): completed, isError.
            task = await engine.tasks.settle(task, "completed")
            return {"resultType": "complete", **_task_view(task, str(exc)), "result": _tool_error(str(exc))}
        if look.asks:  # the sub-agent asks permission: the client asks its user, answers with tasks/update
            task = await engine.tasks.settle(task, "input_required")
            return {"resultType": "complete", **_task_view(task, look.message), "inputRequests": look.asks}
        if not look.ended:
            task = await engine.tasks.settle(task, "working")
            return {"resultType": "complete", **_task_view(task, look.message)}
        task = await engine.tasks.settle(task, "completed")
        return {
            "resultType": "complete",
            **_task_view(task, look.message),
            "result": self._render(task.tool, fit(look.result, engine.max_result_bytes)),
        }

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams) -> HandlerResult:
        """Decide the permission requests a spawn's task asked about (keyed by approval id); responses for
        keys not outstanding are ignored, as the extension says."""
        engine = _engine(ctx)
        task = await _task(engine, params.task_id)
        if task.tool != "spawn_subagent" or task.status not in ("working", "input_required"):
            return {"resultType": "complete"}
        pending = {approval.approval_id for approval in await _pending_approvals(engine, task.run_id)}
        for key, response in params.input_responses.items():
            if key not in pending:
                continue
            decision = _decision(key, response)
            if decision is None:  # dismissed without a choice: the request stays, asked again
                continue
            try:
                await engine.approvals.decide(decision, by="person", source="mcp-task")
            except (ApprovalDecided, ApprovalNotFound):  # decided elsewhere meanwhile (dashboard, CLI)
                continue
            except OrchestratorError as exc:
                raise MCPError(code=INVALID_PARAMS, message=error_text(exc)) from exc
        return {"resultType": "complete"}

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        await _tasks_call(_engine(ctx).tasks.cancel, params.task_id)
        return {"resultType": "complete"}

    async def _call(self, engine: Engine, tool: TaskTool, arguments: dict[str, Any]) -> BaseModel:
        registered = self._engine_tools[tool]
        extra = (_no_progress,) if registered.blocking else ()
        return await call_primitive(registered.fn, engine, registered.input_model, arguments, *extra)

    async def _poll(self, engine: Engine, task: TaskRecord) -> _Look:
        """Where the call stands now: a wait asked again (block_s=0, the same run and step), a spawn's run
        read as spawn_subagent shows it, with what its agent did last."""
        if task.tool != "spawn_subagent":
            return _look(task.tool, await self._call(engine, task.tool, dict(task.arguments)))
        try:
            result, latest = await engine.tasks.spawned(task)
        except OrchestratorError as exc:
            raise ToolError(error_text(exc)) from exc
        look = _look(task.tool, result)
        if look.ended:
            return look
        asking = await _pending_approvals(engine, task.run_id)
        if asking:
            asks = {approval.approval_id: _approval_request(approval) for approval in asking}
            return _Look(result, False, f"{look.message}: {len(asks)} permission request(s) wait for a decision", asks)
        return _Look(result, False, f"{look.message}: {latest.summary}") if latest else look

    def _render(self, tool: TaskTool, result: BaseModel) -> dict[str, Any]:
        """The CallToolResult the tool itself would have answered, as wire JSON."""
        rendered = cast(CallToolResult, self._tools[tool].fn_metadata.convert_result(result))
        return rendered.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class _Look:
    """One look at a task's call: the tool's answer now, whether the call has ended, and a line saying so."""

    result: BaseModel
    ended: bool
    message: str
    asks: dict[str, JsonValue] | None = None  # input requests: a sub-agent's permission requests


def _look(tool: TaskTool, result: BaseModel) -> _Look:
    if isinstance(result, SpawnSubagentResult):
        run = result.run
        return _Look(result, run.status.terminal, f"sub-agent run {run.run_id} is {run.status}")
    status = str(getattr(result, "status", ""))
    return _Look(result, status not in NOT_YET, f"{tool}: {status}")


async def _pending_approvals(engine: Engine, run_id: str) -> list[Approval]:
    """The permission requests of the run and its descendants that wait for a decision, newest first."""
    query = ListApprovalsInput(run_id=run_id, status="pending", limit=ASKED_AT_ONCE)
    return (await engine.approvals.list(query)).approvals


def _approval_request(approval: Approval) -> JsonValue:
    """A permission request as an elicitation the client shows its user (form mode: allow or deny)."""
    call = json.dumps(approval.input, ensure_ascii=False)
    call = call if len(call) <= CALL_SHOWN else call[: CALL_SHOWN - 1] + "…"
    message = (
        f"Sub-agent run {approval.run_id} asks to use {approval.tool_name} with {call}. Allow it? (A message "
        "is passed to the agent; a denial's tells it what to do instead.)"
    )
    return {
        "method": "elicitation/create",
        "params": {"mode": "form", "message": message, "requestedSchema": APPROVAL_FORM},
    }


def _decision(approval_id: str, response: Any) -> DecideApprovalInput | None:
    """The decision an elicitation answer makes: accept with allow/deny, decline (deny), or cancel (none)."""
    shape = "an elicitation result: {action: accept|decline|cancel, content: {decision: allow|deny, message}}"
    if not isinstance(response, dict) or response.get("action") not in ("accept", "decline", "cancel"):
        raise MCPError(code=INVALID_PARAMS, message=f"inputResponses[{approval_id!r}] must be {shape}")
    if response["action"] == "cancel":
        return None
    content = response.get("content") if response["action"] == "accept" else {"decision": "deny"}
    if not isinstance(content, dict) or content.get("decision") not in ("allow", "deny"):
        raise MCPError(code=INVALID_PARAMS, message=f"inputResponses[{approval_id!r}] must be {shape}")
    note = content.get("message") or ("declined by the user" if response["action"] == "decline" else None)
    try:
        return DecideApprovalInput(
            approval_id=approval_id, behavior=content["decision"], message=note if isinstance(note, str) else None
        )
    except ValidationError as exc:
        raise MCPError(code=INVALID_PARAMS, message=error_text(invalid_input_from(exc))) from exc


async def _no_progress(done: float, total: float, message: str) -> None:
    """A task reports through tasks/get, not progress notifications."""


def _declared(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Only a 2026-07-28 request that declares the extension may get a task (never one that did not)."""
    if ctx.protocol_version not in MODERN:
        return False
    capabilities = ctx.session.client_capabilities
    extensions = capabilities.extensions if capabilities is not None else None
    return bool(extensions) and EXTENSION in cast(dict[str, Any], extensions)


def _engine(ctx: ServerRequestContext[Any, Any]) -> Engine:
    return cast(AppContext, ctx.lifespan_context).engine


async def _task(engine: Engine, task_id: str) -> TaskRecord:
    return await _tasks_call(engine.tasks.get, task_id)


async def _tasks_call(call: Callable[[str], Awaitable[TaskRecord]], task_id: str) -> TaskRecord:
    """``call`` on a task id checked first; what it refuses is the request's invalid params, saying why."""
    if not TASK_ID.fullmatch(task_id):
        shown = repr(task_id[:40]) + ("..." if len(task_id) > 40 else "")
        message = f"taskId {shown} is not a task id: pass the taskId a tools/call result gave (task-<32 hex digits>)"
        raise MCPError(code=INVALID_PARAMS, message=f"Failed to retrieve task: {message}")
    try:
        return await call(task_id)
    except TaskNotFound as exc:
        raise MCPError(code=INVALID_PARAMS, message=f"Failed to retrieve task: {error_text(exc)}") from exc


def _task_view(task: TaskRecord, message: str) -> dict[str, JsonValue]:
    """The task's fields on the wire (the extension's Task shape)."""
    return {
        "taskId": task.task_id,
        "status": task.status,
        "statusMessage": message[:500],
        "createdAt": _iso(task.created_at),
        "lastUpdatedAt": _iso(task.updated_at),
        "ttlMs": None,  # kept as long as its run is: retention deletes it with the run
        "pollIntervalMs": POLL_INTERVAL_MS[task.tool],
    }


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _tool_error(text: str) -> dict[str, Any]:
    error = CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
    return error.model_dump(mode="json", by_alias=True, exclude_none=True)
