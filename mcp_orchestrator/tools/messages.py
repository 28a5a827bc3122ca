"""Message tools: tell a running sub-agent something, and (for the sub-agent) read what it was told."""

from __future__ import annotations

from mcp.types import ToolAnnotations

from ..models import ReadMessagesInput, ReadMessagesResult, SendMessageInput, SendMessageResult
from ..runtime import Engine
from ._base import engine_tool


@engine_tool(
    SendMessageInput,
    SendMessageResult,
    title="Send a message to a sub-agent",
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
)
async def send_message(engine: Engine, args: SendMessageInput) -> SendMessageResult:
    """Tell a sub-agent you spawned something while it works: a correction, a hint, a change of plan.

    Use it instead of cancelling and spawning again when the task only needs steering. The message
    is kept durably until it reaches the agent: a running Claude Code sub-agent gets it within
    seconds, as a user message in its conversation; other harnesses, and an agent that is waiting,
    paused or queued, get it in their prompt when they next start or resume, or earlier if the
    agent calls read_messages. A message to a run that ends first is dropped (and journaled).
    Only sub-agents take messages, and only while their run has not ended.

    Returns the `message` (status "queued", or "delivered" once it reached the agent) and
    `delivery`: when it will reach the agent, in words.

    Example: send_message(run_id="01K...", text="Skip the docs; the API change is what matters.")
    -> {"message": {"message_id": "01K...", "status": "queued", ...}, "delivery": "within seconds: ..."}
    """
    return await engine.messages.send(args, source="tool")


@engine_tool(
    ReadMessagesInput,
    ReadMessagesResult,
    title="Read the messages sent to you",
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
    whole=True,  # the service hands out only the messages that fit, and marks just those delivered
)
async def read_messages(engine: Engine, args: ReadMessagesInput) -> ReadMessagesResult:
    """Read the messages that the person or agent who started you has sent since you last looked.

    For a sub-agent (run_id = your own run, MCP_ORCHESTRATOR_RUN_ID): call it between steps, before
    starting a long step and before finishing, and follow what the messages say. A harness that
    takes no input while it runs gets messages only this way (or in its next resume prompt). Each
    message is handed out once: a second call returns only newer ones.

    Returns `messages`, oldest first (empty when there is nothing new), each now marked delivered.

    Example: read_messages(run_id="01K...") -> {"messages": [{"text": "Use the v2 endpoint.",
    "source": "cli", "queued_at": "...", "status": "delivered", ...}]}
    """
    return await engine.messages.read(args)
