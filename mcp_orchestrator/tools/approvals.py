"""Approval tools: the harness's permission prompt, and listing and deciding sub-agents' requests."""

from __future__ import annotations

from mcp.types import ToolAnnotations

from ..models import (
    DecideApprovalInput,
    DecideApprovalResult,
    ListApprovalsInput,
    ListApprovalsResult,
    PermissionAnswer,
    PermissionPromptInput,
)
from ..runtime import Engine
from ..services.events import Progress
from ._base import READS, engine_tool


@engine_tool(
    PermissionPromptInput,
    PermissionAnswer,
    title="Ask whether a tool call is allowed",
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True),
    blocking=True,
    text=True,
)
async def permission_prompt(engine: Engine, args: PermissionPromptInput, progress: Progress) -> PermissionAnswer:
    """Claude Code calls this before a tool call that needs permission; you need not call it yourself.

    The agent profile's permission policy answers at once where it can; otherwise the request waits
    for a person or a supervising agent (list_approvals / decide_approval), blocking for a while and
    reporting progress. If nobody decides in time the answer is deny with a message saying to
    checkpoint and exit: the run waits for the decision without a process, is resumed when it is
    made, and the same call made again is then answered from it at once.

    Returns one text block of JSON: {"behavior": "allow", "updatedInput": <the input>} or
    {"behavior": "deny", "message": "..."}.

    Example: permission_prompt(tool_name="Bash", input={"command": "npm test"}) ->
    {"behavior": "allow", "updatedInput": {"command": "npm test"}}
    """
    return await engine.approvals.request(args, progress)


@engine_tool(
    ListApprovalsInput,
    ListApprovalsResult,
    title="List permission requests",
    annotations=READS,
)
async def list_approvals(engine: Engine, args: ListApprovalsInput) -> ListApprovalsResult:
    """List sub-agents' permission requests: pending ones by default, or decided ones, or all.

    Use it when a sub-agent you spawned is `waiting` and its status shows an 'approval' wait: the
    request says which tool and input it wants (`input`, a preview when long) and the narrowest
    `suggested_rule`. Pass run_id=<your run> to see only your sub-agents' (and theirs) requests.

    Returns `approvals`, newest first, each with `approval_id`, `run_id`, `status` (pending,
    allowed, denied, expired, abandoned), `tool_name`, `input`, `suggested_rule`, `requested_at`,
    `expires_at`, and once decided the `decision`.

    Example: list_approvals(run_id="01J...") -> {"approvals": [{"approval_id": "01K...", "status":
    "pending", "tool_name": "Bash", "input": {"command": "npm install"}, "suggested_rule":
    "Bash(npm install)", ...}]}
    """
    return await engine.approvals.list(args)


@engine_tool(
    DecideApprovalInput,
    DecideApprovalResult,
    title="Decide a permission request",
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
)
async def decide_approval(engine: Engine, args: DecideApprovalInput) -> DecideApprovalResult:
    """Allow or deny a sub-agent's pending permission request (see list_approvals).

    Decide only what you can judge from the task you gave: a sub-agent you spawned (or one below it)
    asks to run a command or edit a file. scope="call" allows or denies that one call; scope="rule"
    also allows (or denies) every later call of the run that `rule` matches (default: the request's
    suggested_rule, never wider than the call). Give a `message` when denying: the agent reads it.
    The agent waiting on it goes on, or is resumed, with the decision. A decision is final.

    Returns the `approval` with its `decision`.

    Example: decide_approval(approval_id="01K...", behavior="deny", message="No new dependencies;
    use the standard library.") -> {"approval": {"status": "denied", "decision": {"by": "agent", ...}}}
    """
    return await engine.approvals.decide(args, by="agent", source="tool")
