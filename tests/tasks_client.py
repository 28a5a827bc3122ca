"""A client side of the MCP tasks extension (io.modelcontextprotocol/tasks), for the tests: it
declares the extension, and resolves a task result by polling tasks/get, as a client that supports
the extension does. ``handle`` calls a tool and returns the raw task handle instead."""

from __future__ import annotations

from typing import Any, Literal

import anyio
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.types import CallToolResult, Request, RequestParams, Result
from pydantic import ConfigDict

EXTENSION = "io.modelcontextprotocol/tasks"
TERMINAL = {"completed", "failed", "cancelled"}


class TaskParams(RequestParams):
    task_id: str
    input_responses: dict[str, Any] | None = None


class TaskRequest(Request[TaskParams, Literal["tasks/get", "tasks/update", "tasks/cancel"]]):
    name_param = "taskId"  # the extension routes tasks/* by Mcp-Name over HTTP


class _Task(Result):
    """The extension's Task fields, on both of its answers."""

    model_config = ConfigDict(extra="allow")
    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None


class TaskHandle(_Task):
    """What a tools/call answers when the server makes it a task."""

    result_type: Literal["task"]


class TaskState(_Task):
    """What tasks/get answers."""

    result_type: Literal["complete"]
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class TasksClient(ClientExtension):
    identifier = EXTENSION

    def __init__(self) -> None:
        self.handles: list[TaskHandle] = []
        self.polls = 0

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=TaskHandle, resolve=self._resolve)]

    async def _resolve(self, handle: TaskHandle, ctx: ClaimContext) -> CallToolResult:
        self.handles.append(handle)
        while True:
            state = await ctx.session.send_request(
                TaskRequest(method="tasks/get", params=TaskParams(task_id=handle.task_id)), TaskState
            )
            self.polls += 1
            if state.status in TERMINAL:
                if state.result is None:
                    raise RuntimeError(f"task {state.task_id} ended {state.status}: {state.error}")
                return CallToolResult.model_validate(state.result)
            await anyio.sleep(min(state.poll_interval_ms or 1000, 200) / 1000)  # tests poll faster


async def handle(client: Client, tool: str, **arguments: Any) -> TaskHandle | CallToolResult:
    """The tool's raw answer: a task handle when the server made the call a task."""
    result = await client.session.call_tool(tool, arguments, allow_claimed=True)
    return result if isinstance(result, CallToolResult) else TaskHandle.model_validate(result.model_dump(by_alias=True))


async def task_request(
    client: Client, method: Literal["tasks/get", "tasks/update", "tasks/cancel"], task_id: str, **extra: Any
) -> TaskState | Result:
    params = TaskParams(task_id=task_id, **extra)
    if method == "tasks/get":
        return await client.session.send_request(TaskRequest(method=method, params=params), TaskState)
    return await client.session.send_request(TaskRequest(method=method, params=params), Result)
