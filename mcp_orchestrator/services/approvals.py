"""Sub-agents' permission requests: decided first by their profile's policy, else by a person or a
supervising agent, durably.

A call the policy leaves to someone becomes a wait of the asking run (kind 'approval') for the event
'approval.<approval_id>', whose data is the decision: a person (CLI, API), a parent agent (MCP), a
webhook or a schedule decides it alike, and its expiry is a decision by timeout. The step is named
after the call (``approval:<tool>:<hash of its input>:<n>``), so the same call asked again after a
resume finds it: pending, it waits on; decided and not yet answered, the decision answers it at
once; already answered, a decision for one call is spent and the call is a new request (n + 1).

The harness's permission tool blocks up to ``[approvals] wait_s`` for the decision, then tells the
agent to checkpoint and exit: its run waits on, holding no process, and is resumed when decided.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .. import transitions
from ..errors import (
    ApprovalDecided,
    ApprovalNotFound,
    InvalidInput,
    NotAllowed,
    OrchestratorError,
    RunTerminal,
)
from ..ids import new_id
from ..models import (
    Approval,
    ApprovalDecision,
    DecideApprovalInput,
    DecideApprovalResult,
    ListApprovalsInput,
    ListApprovalsResult,
    PermissionAnswer,
    PermissionPromptInput,
    Run,
    RunStatus,
    SendEventInput,
    Step,
    StepStatus,
    Wait,
)
from ..permissions import Call, PermissionPolicy, Verdict, bounded_input, canonical, evaluate, suggested_rule
from ..profiles import AgentsConfig
from ..store.base import Transaction
from ..transitions import get_run, iso
from .context import Context, Progress

KIND = "approval"
STEP_PREFIX = "approval:"

WAIT_AND_EXIT = (
    "Your request to use {tool} is waiting for a decision by a person or a supervising agent (approval "
    "{approval_id} of run {run_id}). Do not work around it: checkpoint what you have done (checkpoint), then end "
    "this session now, without calling finish_run. You will be resumed once it is decided; then make exactly the "
    "same {tool} call again: it is answered from the decision at once."
)
DENIED_BY = {"person": "A person", "agent": "A supervising agent", "policy": "The permission policy"}


@dataclass(frozen=True)
class _Pending:
    """A request that waits for its decision: the step to watch."""

    step: str
    approval_id: str


class Approvals:
    """Permission requests and their decisions (see the module docstring)."""

    def __init__(self, context: Context, config: AgentsConfig) -> None:
        self.context = context
        self.store = context.store
        self.config = config
        self.home = os.path.expanduser("~")

    # The harness asks.

    async def request(self, args: PermissionPromptInput, progress: Progress | None = None) -> PermissionAnswer:
        """Answer whether the run's agent may make this call: by the policy at once, from a decision
        made on the same call, or by waiting for a person's decision (at most ``wait_s``)."""
        own = self.context.subagent_run_id
        if own is not None and args.run_id not in (None, own):  # it would spend another run's decisions
            raise NotAllowed(
                f"run_id {args.run_id!r}: this server belongs to the sub-agent of run {own}, which asks for its "
                "own calls only; leave run_id out",
                run_id=args.run_id,
            )
        run_id = args.run_id or own
        if run_id is None:
            raise InvalidInput(
                "run_id: give the asking sub-agent's run id (a sub-agent's own server knows it from "
                "MCP_ORCHESTRATOR_RUN_ID)"
            )
        digest = hashlib.sha256(canonical(args.input).encode()).hexdigest()[:16]
        approval_id = new_id()
        written: PermissionAnswer | _Pending | OrchestratorError = await self.store.write(
            lambda tx: self._request(tx, args, run_id, digest, approval_id)
        )
        if isinstance(written, OrchestratorError):
            raise written
        if isinstance(written, PermissionAnswer):
            return written
        return await self._await_decision(run_id, written, args, progress)

    def _request(
        self, tx: Transaction, args: PermissionPromptInput, run_id: str, digest: str, approval_id: str
    ) -> PermissionAnswer | _Pending | OrchestratorError:
        now = self.context.now()
        run = get_run(tx, run_id, payloads=False)
        if (expired := transitions.expire_if_overdue(tx, now, run)) is not None:
            return expired
        if run.status.terminal:
            raise RunTerminal(run.run_id, run.status, "its agent may not use any more tools: stop and exit")
        policy, call = self._call(tx, run, args)
        steps = tx.list_steps(run_id, kind=KIND)
        granted, refused = _run_rules(steps)
        verdict = evaluate(policy, call, granted, refused)
        prefix = f"{STEP_PREFIX}{args.tool_name}:{digest}:"
        numbered = [(s.step[len(prefix) :], s) for s in steps if s.step.startswith(prefix)]
        latest = max(((int(n), s) for n, s in numbered if n.isdigit()), key=lambda found: found[0], default=None)
        hard_deny = verdict.behavior == "deny" and verdict.rule is not None and verdict.rule in policy.deny
        if latest is not None:
            step = latest[1]
            if step.status == StepStatus.WAITING and tx.get_wait(run_id, step.step) is not None:
                if verdict.behavior == "ask":
                    return _Pending(step.step, _request_of(step).get("approval_id", ""))
                # A rule decided since (or a changed policy) covers it now: the request ends by the policy.
                _decide_by_policy(tx, now, step, verdict)
                return _answered(tx, now, run_id, tx.get_step(run_id, step.step) or step, args.input)
            if step.status == StepStatus.COMPLETED and not _output(step).get("answered_at") and not hard_deny:
                return _answered(tx, now, run_id, step, args.input)
        if verdict.behavior != "ask":
            detail = {"tool_name": args.tool_name, "behavior": verdict.behavior, "by": "policy"}
            detail["reason"] = verdict.reason
            if args.tool_use_id:
                detail["tool_use_id"] = args.tool_use_id
            tx.append_journal(run_id, "permission_decided", now, detail=detail)
            said = f"{args.tool_name} {verdict.behavior}ed by the policy: {verdict.reason}"
            transitions.note_for_run(tx, run_id, now, "permission", said, self.config.activity_max)
            if verdict.behavior == "allow":
                return PermissionAnswer(behavior="allow", updatedInput=args.input)
            return PermissionAnswer(behavior="deny", message=_policy_denial(args.tool_name, verdict))
        name = f"{prefix}{latest[0] + 1 if latest else 1}"
        until = now + timedelta(seconds=self.config.approvals.expire_s)
        preview, truncated = bounded_input(args.input)
        request: dict[str, Any] = {
            "approval_id": approval_id,
            "tool_name": args.tool_name,
            "input": preview,
            "truncated": truncated,
            "tool_use_id": args.tool_use_id,
            "suggested_rule": suggested_rule(args.tool_name, args.input, call.cwd, call.home),
            "requested_at": iso(now),
            "expires_at": iso(until),
        }
        wait = Wait(step=name, kind=KIND, events=[transitions.approval_event(approval_id)], until=until, created_at=now)
        opened = transitions.open_wait(tx, run_id, wait)
        if isinstance(opened, OrchestratorError):
            return opened
        opened_step = tx.get_step(run_id, name)
        assert opened_step is not None, "open_wait records the step"
        tx.save_step(run_id, opened_step.model_copy(update={"output": request}))
        said = f"{args.tool_name} asks a person: approval {approval_id}"
        transitions.note_for_run(tx, run_id, now, "permission", said, self.config.activity_max)
        return _Pending(name, approval_id)

    def _call(self, tx: Transaction, run: Run, args: PermissionPromptInput) -> tuple[PermissionPolicy, Call]:
        """The policy of the run's agent profile, and the call as it judges it (the agent's cwd and
        worktree); a run that is no sub-agent gets the default policy, in its workspace."""
        agent = tx.get_agent(run.run_id)
        profile = None if agent is None else self.config.profiles.get(agent.profile)
        policy = profile.permissions if profile is not None else PermissionPolicy()
        cwd = agent.cwd if agent is not None else run.workspace or self.context.workspace or os.getcwd()
        worktree = agent.worktree if agent is not None else None
        return policy, Call(args.tool_name, args.input, cwd, self.home, worktree)

    async def _await_decision(
        self, run_id: str, pending: _Pending, args: PermissionPromptInput, progress: Progress | None
    ) -> PermissionAnswer:
        name = pending.step

        async def check() -> tuple[bool, Step | None, float | None]:
            step, wait = await self.store.read(lambda tx: (tx.get_step(run_id, name), tx.get_wait(run_id, name)))
            if step is None or step.status != StepStatus.WAITING or wait is None:
                return True, step, None
            if wait.until is None:
                return False, step, None
            due_in = (wait.until - self.context.now()).total_seconds()
            if due_in <= 0:  # expired: so that it ends even where no server fires timers
                await self.store.write(lambda tx: transitions.fire_due_waits(tx, self.context.now()))
                return await check()
            return False, step, due_in

        message = f"waiting for a decision on {args.tool_name} (approval {pending.approval_id})"
        step = await self.context.until(check, self.config.approvals.wait_s, progress, message)
        if step is not None and step.status == StepStatus.COMPLETED:
            return await self.store.write(lambda tx: self._answer_decided(tx, run_id, name, args))
        run = await self.store.read(lambda tx: get_run(tx, run_id, payloads=False))
        if run.status.terminal:
            raise RunTerminal(run_id, run.status, "its permission request ended unanswered: stop and exit")
        text = WAIT_AND_EXIT.format(tool=args.tool_name, approval_id=pending.approval_id, run_id=run_id)
        return PermissionAnswer(behavior="deny", message=text)

    def _answer_decided(self, tx: Transaction, run_id: str, name: str, args: PermissionPromptInput) -> PermissionAnswer:
        step = tx.get_step(run_id, name)
        assert step is not None and step.status == StepStatus.COMPLETED, "a decided request stays decided"
        return _answered(tx, self.context.now(), run_id, step, args.input)

    # People and agents decide.

    async def list(self, args: ListApprovalsInput) -> ListApprovalsResult:
        """Requests, newest first: pending ones (by default), decided ones, or all; of a run and its
        descendants, or of every run."""
        await self._expire_due()

        def read(tx: Transaction) -> list[Approval]:
            runs: set[str] | None = None
            if args.run_id is not None:
                get_run(tx, args.run_id, payloads=False)
                runs = {args.run_id, *tx.descendant_ids(args.run_id, list(RunStatus))}
            if args.status == "pending":
                waits = [(r, w) for r, w in tx.waits_of_kind(KIND) if runs is None or r in runs]
                found = [(r, tx.get_step(r, w.step)) for r, w in reversed(waits[-args.limit :])]
                return [approval_of(r, step, pending=True) for r, step in found if step is not None]
            statuses = [StepStatus.COMPLETED]
            if args.status == "all":
                statuses.append(StepStatus.WAITING)
            rows = tx.steps_of_kind(KIND, statuses, None if runs is None else sorted(runs), args.limit)
            return [approval_of(r, s, pending=tx.get_wait(r, s.step) is not None) for r, s in rows]

        return ListApprovalsResult(approvals=await self.store.read(read))

    async def decide(self, args: DecideApprovalInput, *, by: str, source: str) -> DecideApprovalResult:
        """Decide a pending request (``by``: person or agent; ``source``: the event source, e.g. cli, api,
        tool). The decision is sent as the request's event. In a sub-agent's own processes, only the
        requests of its descendants can be decided."""

        def decide(tx: Transaction) -> DecideApprovalResult:
            name = transitions.approval_event(args.approval_id)
            pending = [(run_id, wait) for run_id, wait in tx.waits_for(name) if wait.kind == KIND]
            if not pending:
                raise _not_pending(tx, args.approval_id)
            run_id, wait = pending[0]
            decider = self.context.subagent_run_id
            transitions.check_below(tx, run_id, decider, "decides the requests of", approval_id=args.approval_id)
            data = {
                "behavior": args.behavior,
                "scope": args.scope,
                "rule": args.rule,
                "message": args.message,
                "by": by,
                "source": source if decider is None else f"{source}:run {decider}",
            }
            transitions.send_event(tx, self.context.now(), SendEventInput(name=name, data=data), new_id(), source)
            step = tx.get_step(run_id, wait.step)
            assert step is not None, "a decided request keeps its step"
            return DecideApprovalResult(approval=approval_of(run_id, step, pending=False))

        await self._expire_due()
        return await self.store.write(decide)

    async def _expire_due(self) -> None:
        """Deny the requests whose time is up, so that what is read is right even where no server fires
        timers."""
        due = await self.store.read(lambda tx: tx.due_waits(self.context.now()))
        if any(wait.kind == KIND for _, wait in due):
            await self.store.write(lambda tx: transitions.fire_due_waits(tx, self.context.now()))


def approval_of(run_id: str, step: Step, *, pending: bool) -> Approval:
    """The request an approval step holds, and its decision once it has one."""
    output = _output(step)
    ended = step.status == StepStatus.COMPLETED
    request = _request_of(step)
    decision = output.get("decision") if ended else None
    return Approval(
        approval_id=request.get("approval_id") or "",
        run_id=run_id,
        step=step.step,
        status=output.get("status", "denied") if ended else "pending" if pending else "abandoned",
        tool_name=request.get("tool_name") or step.step.split(":")[1],
        input=request.get("input"),
        truncated=bool(request.get("truncated")),
        tool_use_id=request.get("tool_use_id"),
        suggested_rule=request.get("suggested_rule"),
        requested_at=request.get("requested_at") or step.started_at,
        expires_at=request.get("expires_at"),
        decision=ApprovalDecision.model_validate(decision) if isinstance(decision, dict) else None,
        answered_at=output.get("answered_at"),
    )


def _output(step: Step) -> dict[str, Any]:
    return step.output if isinstance(step.output, dict) else {}


def _request_of(step: Step) -> dict[str, Any]:
    """The request: the whole output while the step waits, its 'request' once decided."""
    output = _output(step)
    request = output.get("request") if step.status == StepStatus.COMPLETED else output
    return request if isinstance(request, dict) else {}


def _run_rules(steps: list[Step]) -> tuple[list[str], list[str]]:
    """(rules allowed, rules denied) for the rest of the run by its decisions of scope 'rule'."""
    granted: list[str] = []
    refused: list[str] = []
    for step in steps:
        decision = _output(step).get("decision") if step.status == StepStatus.COMPLETED else None
        if isinstance(decision, dict) and decision.get("scope") == "rule" and isinstance(decision.get("rule"), str):
            (granted if decision.get("behavior") == "allow" else refused).append(decision["rule"])
    return granted, refused


def _decide_by_policy(tx: Transaction, now: datetime, step: Step, verdict: Verdict) -> None:
    """End a pending request the policy now decides, by sending its decision like anyone would."""
    approval_id = _request_of(step).get("approval_id", "")
    data = {
        "behavior": verdict.behavior,
        "message": f"decided by the permission policy: {verdict.reason}",
        "by": "policy",
        "source": "policy",
    }
    name = transitions.approval_event(approval_id)
    transitions.send_event(tx, now, SendEventInput(name=name, data=data), new_id(), "system")


def _answered(tx: Transaction, now: datetime, run_id: str, step: Step, given: dict[str, Any]) -> PermissionAnswer:
    """The answer a decided request gives the agent, recorded as given (``answered_at``): a decision
    for one call answers one call."""
    output = _output(step)
    if not output.get("answered_at"):
        tx.save_step(run_id, step.model_copy(update={"output": {**output, "answered_at": iso(now)}}))
    found = output.get("decision")
    decision: dict[str, Any] = found if isinstance(found, dict) else {}
    tool = _request_of(step).get("tool_name") or "this tool"
    if decision.get("behavior") == "allow":
        return PermissionAnswer(behavior="allow", updatedInput=given)
    if output.get("status") == "expired":
        message = (
            f"Nobody decided on your request to use {tool} before it expired, so it is denied. Do not retry the "
            "same call; find another way, or finish your run saying what you needed."
        )
    else:
        who = DENIED_BY.get(str(decision.get("by")), "Someone")
        said = decision.get("message")
        message = f"{who} denied this {tool} call" + (f": {said}" if said else ".")
        message += " Do not retry it unchanged; find another way, or finish your run saying what you needed."
    return PermissionAnswer(behavior="deny", message=message)


def _policy_denial(tool: str, verdict: Verdict) -> str:
    return (
        f"The orchestrator's permission policy denies this {tool} call ({verdict.reason}). Do not retry it "
        "unchanged; find another way, or finish your run saying what you needed."
    )


def _not_pending(tx: Transaction, approval_id: str) -> OrchestratorError:
    """Why a decision cannot be made: decided already (the decision named), or no such request."""
    name = transitions.approval_event(approval_id)
    for _, event in tx.list_events(name, 5):
        data = event.data if isinstance(event.data, dict) else {}
        if data.get("behavior") in ("allow", "deny"):
            by = data.get("by") or "someone"
            return ApprovalDecided(
                f"approval {approval_id!r} was decided already ({data['behavior']}, by {by}, at "
                f"{iso(event.received_at)}); a decision is final. If the agent needs it again, it asks again",
                approval_id=approval_id,
            )
    return ApprovalNotFound(approval_id)
