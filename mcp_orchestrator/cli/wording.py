"""Remedies in a shell's words: an error whose next step is an MCP tool (``list_runs``, ``finish_run``)
carries it apart from its message (``OrchestratorError.remedy``); a person at a terminal is told the
command that does the same instead. Nothing else of a message is touched: the values quoted in it, the
choices it lists and the fields it names stay as they are."""

from __future__ import annotations

# Each MCP tool a remedy may name, as a person reads it here: the command that does the same, or what
# the tool is for where only an agent calls it.
SHELL_TERMS = {
    "list_runs": "'mcp-orchestrator runs'",
    "start_run": "'mcp-orchestrator start'",
    "finish_run": "'mcp-orchestrator finish'",
    "cancel_run": "'mcp-orchestrator cancel'",
    "retry_run": "'mcp-orchestrator retry'",
    "spawn_subagent": "'mcp-orchestrator spawn'",
    "send_event": "'mcp-orchestrator send-event'",
    "list_approvals": "'mcp-orchestrator approvals'",
    "decide_approval": "'mcp-orchestrator approve' or 'deny'",
    "set_budget": "'mcp-orchestrator budget'",
    "send_message": "'mcp-orchestrator message'",
    "list_schedules": "'mcp-orchestrator schedules'",
    "unschedule": "'mcp-orchestrator schedules remove'",
    "wait_for_event": "the agent's wait for an event",
    "wait_for_runs": "the agent's wait for runs",
    "read_messages": "the agent's inbox",
    "permission_prompt": "the agent's permission request",
}
