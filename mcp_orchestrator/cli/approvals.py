"""Sub-agents' permission requests from a shell: list them, approve or deny one."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import Settings
from ..errors import InvalidInput
from ..models import Approval, DecideApprovalInput, DecideApprovalResult, ListApprovalsInput
from .command import Commands, add_command, with_engine, with_query
from .options import ModelOptions, Option
from .render import brief, print_json, print_table, when

APPROVAL = Option("approval_id", "ID", help="The permission request's id, as 'mcp-orchestrator approvals' shows it.")
LIST = ModelOptions(
    ListApprovalsInput,
    Option(
        "run_id",
        "--run",
        help="Only this run's and its descendants' requests (its id, key or the start of its id).",
        run=True,
    ),
    "limit",
)
APPROVE = ModelOptions(
    DecideApprovalInput,
    APPROVAL,
    Option(
        "rule",
        help="Also allow, for the rest of the run, every call this permission rule matches, e.g. 'Bash(npm test:*)'.",
    ),
    Option("message", help="Said to the agent."),
)
DENY = ModelOptions(DecideApprovalInput, APPROVAL, Option("message", help="Said to the agent: why, and what instead."))


def add_commands(commands: Commands) -> None:
    listing = add_command(
        commands,
        "approvals",
        _approvals,
        LIST,
        help="list sub-agents' permission requests (pending ones by default)",
        description="List the permission requests of sub-agents, newest first: the pending ones (each keeps its "
        "run waiting), or with --all the decided ones too. --run shows a run's and its descendants' only.",
    )
    listing.add_argument("--all", action="store_true", help="decided requests too, with their decisions")
    approve = add_command(
        commands,
        "approve",
        _approve,
        APPROVE,
        help="allow a pending permission request",
        description="Allow a sub-agent's pending permission request: this call only, or with --for-run (or "
        "--rule RULE) every later call of its run that the request's suggested rule (or RULE) matches. The agent "
        "goes on, or is resumed, with the decision.",
    )
    approve.add_argument(
        "--for-run",
        action="store_true",
        help="also allow, for the rest of the run, calls its suggested rule matches (the exact command or file)",
    )
    add_command(
        commands,
        "deny",
        _deny,
        DENY,
        help="deny a pending permission request",
        description="Deny a sub-agent's pending permission request; --message tells the agent why.",
    )


def _approvals(args: argparse.Namespace, settings: Settings) -> int:
    query = LIST.build(args, status="all" if args.all else "pending")
    result = with_query(settings, LIST, query, lambda engine, query: engine.approvals.list(query))
    if args.json:
        return print_json(result)
    headers = ["APPROVAL", "RUN", "TOOL", "REQUEST", "REQUESTED", "STATUS"]
    rows: list[list[Any]] = [
        [a.approval_id, a.run_id, a.tool_name, _request(a), when(a.requested_at), _status(a)] for a in result.approvals
    ]
    print_table(headers, rows, empty="no pending permission requests" if not args.all else "no permission requests")
    return 0


def _approve(args: argparse.Namespace, settings: Settings) -> int:
    if args.for_run and args.rule is not None:
        raise InvalidInput("give --rule RULE or --for-run (the request's suggested rule), not both")
    scope = "rule" if args.for_run or args.rule is not None else "call"
    return _decide(args, settings, APPROVE.build(args, behavior="allow", scope=scope))


def _deny(args: argparse.Namespace, settings: Settings) -> int:
    return _decide(args, settings, DENY.build(args, behavior="deny"))


def _decide(args: argparse.Namespace, settings: Settings, query: DecideApprovalInput) -> int:
    result: DecideApprovalResult = with_engine(
        settings, lambda engine: engine.approvals.decide(query, by="person", source="cli")
    )
    if args.json:
        return print_json(result)
    approval = result.approval
    decision = approval.decision
    verb = "allowed" if query.behavior == "allow" else "denied"
    line = f"{verb} {approval.tool_name} {_request(approval)} for run {approval.run_id}"
    if decision is not None and decision.scope == "rule":
        line += f", and for the rest of the run every call matching {decision.rule}"
    print(line)
    return 0


def _request(approval: Approval) -> str:
    """What the call asks, in a few words: the command or the path, else its input."""
    value = approval.input
    if isinstance(value, dict):
        for field in ("command", "file_path", "notebook_path", "url", "path", "pattern"):
            if isinstance(value.get(field), str):
                return brief(value[field], 80)
    return brief(value, 80)


def _status(approval: Approval) -> str:
    decision = approval.decision
    if decision is None:
        return approval.status
    scope = f" (rule {decision.rule})" if decision.scope == "rule" else ""
    return f"{approval.status} by {decision.by}{scope}"
