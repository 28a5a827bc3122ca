"""State changes that run inside the caller's transaction, shared by the services.

Every function here takes the open ``Transaction`` first and the time of the change second, reads
what it needs through the transaction, writes and journals, and never commits: the service that
opened the transaction decides when it ends. A service's own one-caller changes stay in that
service; what more than one path needs (a run ending, a wait ending, an event arriving, a sub-agent
being queued) lives here once, so every way in behaves alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from .errors import (
    InvalidInput,
    KeyConflict,
    NotAllowed,
    OrchestratorError,
    RunNotFound,
    RunTerminal,
    invalid_input_from,
)
from .ids import new_id
from .models import (
    LIST_INDEX,
    LIVE_RUN_STATUSES,
    Activity,
    ActivityKind,
    Agent,
    AgentState,
    ApprovalDecision,
    Budget,
    Event,
    Message,
    RetryPolicy,
    Run,
    RunState,
    RunStatus,
    SendEventInput,
    SendEventResult,
    SpawnSubagentResult,
    StartRunInput,
    StartRunResult,
    Step,
    StepStatus,
    Usage,
    Wait,
)
from .store.base import Transaction

# Locks on names (``Transaction.lock``): what a decision rests on that is not a row yet. Every name
# is built here, so the names cannot meet by accident; they are those earlier releases took inside
# the store, so nodes of both on one database still take turns.

AGENT_LIMITS = "agent-limits"  # the count of active sub-agents that claims and reaps decide on


def event_lock(name: str) -> str:
    """An event sent with this name and a wait registered on it."""
    return name


def lease_lock(name: str) -> str:
    """A lease, which may not be a row yet."""
    return f"lease:{name}"


def schedule_lock(name: str) -> str:
    """A schedule's name, which may not be a row yet."""
    return f"schedule:{name}"


# Runs.


def get_run(tx: Transaction, run_id: str, *, payloads: bool = True) -> Run:
    """The run, or RunNotFound naming the id."""
    run = tx.get_run(run_id, payloads=payloads)
    if run is None:
        raise RunNotFound(run_id)
    return run


def run_and_step(tx: Transaction, run_id: str, step: str) -> tuple[RunState, Step | None]:
    """The run's state with its step ``step`` (None: none yet), or RunNotFound naming the id."""
    found = tx.run_and_step(run_id, step)
    if found is None:
        raise RunNotFound(run_id)
    return found


def awaited_runs(tx: Transaction, run_ids: list[str], *, settle: bool = False) -> list[Run]:
    """The runs a fan-in waits for, looked at but not taken (see ``Transaction.peek_runs``)."""
    runs = tx.peek_runs(run_ids, settle=settle)
    for run_id, run in zip(run_ids, runs, strict=True):
        if run is None:
            raise RunNotFound(run_id)
    return [run for run in runs if run is not None]


def create_run(
    tx: Transaction,
    now: datetime,
    args: StartRunInput,
    run_id: str,
    *,
    workspace: str | None = None,
    status: RunStatus = RunStatus.RUNNING,
    max_turns: int | None = None,
) -> StartRunResult:
    """The run with ``args.key`` if there is one, else a new run in ``status`` (``workspace`` is
    recorded when the caller names none; ``max_turns`` goes into its budget, for a sub-agent)."""
    if args.key is not None and (existing := tx.get_run_by_key(args.key)) is not None:
        if existing.name != args.name:
            raise KeyConflict(
                f"key {args.key!r} already belongs to run {existing.run_id} named {existing.name!r}, "
                f"not {args.name!r}; use another key, or the same name to get that run back",
                key=args.key,
                run_id=existing.run_id,
            )
        if expire_if_overdue(tx, now, existing) is not None:
            existing = get_run(tx, existing.run_id)
        return StartRunResult(run=existing, created=False, steps=tx.list_steps(existing.run_id))
    if args.parent_run_id is not None and tx.get_run(args.parent_run_id) is None:
        raise InvalidInput(
            f"parent_run_id {args.parent_run_id!r} names no run; pass an existing run's id or leave it out",
            parent_run_id=args.parent_run_id,
        )
    run = Run(
        run_id=run_id,
        name=args.name,
        key=args.key,
        status=status,
        input=args.input,
        parent_run_id=args.parent_run_id,
        labels=args.labels,
        workspace=args.workspace or workspace,
        retry=args.retry or RetryPolicy(),
        deadline_at=after(now, args.timeout_s),
        created_at=now,
        updated_at=now,
        budget=Budget(max_budget_usd=args.max_budget_usd, max_turns=max_turns)
        if args.max_budget_usd is not None or max_turns is not None
        else None,
    )
    # Events stored from here on arrived after the run started: waits may receive them.
    tx.insert_run(run, events_after=tx.last_event_seq())
    tx.insert_cancel_triggers(run_id, [(trigger.event, trigger.match or {}) for trigger in args.cancel_on])
    detail = {"name": run.name, "key": run.key, "parent_run_id": run.parent_run_id}
    tx.append_journal(run_id, "run_created", now, detail={k: v for k, v in detail.items() if v})
    return StartRunResult(run=run, created=True, steps=[])


def end_runs(
    tx: Transaction,
    now: datetime,
    run_ids: list[str],
    status: RunStatus,
    kind: str,
    detail: dict[str, Any] | None,
    *,
    output: Any = None,
    error: Any = None,
) -> None:
    """Every way a run ends comes here: its waits end, its journal says why, and then the
    fan-ins waiting for it are checked (so a journal reads cause before effect)."""
    for run_id in run_ids:
        for wait in tx.list_waits(run_id):  # it waits for nothing more; its wait steps stay as they were
            tx.delete_wait(run_id, wait.step)
    tx.set_runs_status(run_ids, status, ended_at=now, output=output, error=error)
    for run_id in run_ids:
        tx.append_journal(run_id, kind, now, detail=detail)
    drop_messages(tx, now, run_ids)
    # No lock: a fan-in registered at the same moment takes turns with this on the run's row (it reads
    # the awaited runs FOR SHARE, see settle_fan_in), so one of the two always sees the other.
    for run_id in run_ids:
        for waiter_id, wait in tx.waits_for(run_id):
            if wait.kind == "runs" and tx.get_wait(waiter_id, wait.step) is not None:
                settle_fan_in(tx, now, waiter_id, wait)


def cancel(tx: Transaction, now: datetime, run: Run, reason: str, *, event_seq: int | None = None) -> list[str]:
    """Cancel the run (if live) and its live descendants; returns their ids. ``event_seq``: the event that
    triggered it, kept in the run's journal entry so that the event can be shown with the runs it cancelled."""
    own = [] if run.status.terminal else [run.run_id]
    descendants = tx.descendant_ids(run.run_id, LIVE_RUN_STATUSES)
    if own:
        why = {"reason": reason}
        journaled = why if event_seq is None else {**why, "event_seq": event_seq}
        end_runs(tx, now, own, RunStatus.CANCELLED, "run_cancelled", journaled, error=why)
    if descendants:
        inherited = {"reason": reason, "cancelled_with": run.run_id}
        end_runs(tx, now, descendants, RunStatus.CANCELLED, "run_cancelled", inherited, error=inherited)
    return own + descendants


# Deadlines: enforced whenever a run is written or read, so no background process is needed for a
# timed-out run to show as failed.


def overdue(run: Run | RunState, now: datetime) -> bool:
    return not run.status.terminal and run.deadline_at is not None and now >= run.deadline_at


def expire_if_overdue(tx: Transaction, now: datetime, run: Run | RunState) -> OrchestratorError | None:
    """Fail the run if its deadline has passed; returns the error its caller raises after the commit."""
    if not overdue(run, now):
        return None
    if not isinstance(run, Run):
        run = get_run(tx, run.run_id, payloads=False)
    deadline = run.model_dump(mode="json", include={"deadline_at"})["deadline_at"]
    error = {"type": "timeout", "message": f"the run did not finish by its deadline, {deadline}"}
    end_runs(tx, now, [run.run_id], RunStatus.FAILED, "run_timed_out", {"deadline_at": deadline}, error=error)
    return RunTerminal(run.run_id, RunStatus.FAILED, f"it timed out at its deadline, {deadline}")


# Waits. A wait is a step: registered once, ended by the first matching event (or its timeout, or
# its wake time), and from then on memoized like any completed step.

WAIT_TOOLS = {  # by wait kind
    "event": "wait_for_event",
    "sleep": "sleep",
    "runs": "wait_for_runs",
    "approval": "permission_prompt",
    "budget": "set_budget",
}


def open_wait(tx: Transaction, run_id: str, wait: Wait) -> Wait | OrchestratorError | None:
    """Register ``wait`` (made at ``wait.created_at``) for the run, unless its step already is that wait.

    Returns the new wait, None for an existing one, or an error to raise after the commit.
    """
    run, step = run_and_step(tx, run_id, wait.step)
    if step is not None and step.kind != wait.kind:
        raise InvalidInput(
            f"step {wait.step!r} of run {run.run_id} is a {step.kind} step, not a {wait.kind} wait; "
            "give this wait a step name of its own",
            run_id=run.run_id,
            step=wait.step,
        )
    if step is not None and step.status == StepStatus.COMPLETED:
        return None  # ended: its result is memoized
    if run.status.terminal:
        what = "its wait ended unanswered" if step is not None else "it takes no new waits"
        raise RunTerminal(run.run_id, run.status, what)
    if step is not None:
        return None  # pending: pick it up
    if (expired := expire_if_overdue(tx, wait.created_at, run)) is not None:
        return expired
    tx.save_step(
        run.run_id,
        Step(step=wait.step, kind=wait.kind, status=StepStatus.WAITING, attempt=1, started_at=wait.created_at),
    )
    tx.insert_wait(run.run_id, wait)
    detail = wait.model_dump(
        mode="json", include={"kind", "events", "run_ids", "match", "until"}, exclude_defaults=True
    )
    tx.append_journal(run.run_id, "waiting", wait.created_at, wait.step, detail=detail)
    if run.status != RunStatus.WAITING:
        tx.set_runs_status([run.run_id], RunStatus.WAITING)
    return wait


def end_wait(
    tx: Transaction, now: datetime, run_id: str, name: str, output: dict[str, Any], kind: str, detail: dict[str, Any]
) -> None:
    """The wait step ``name`` completes with ``output``; the run runs again once nothing else holds it."""
    tx.delete_wait(run_id, name)
    step = tx.get_step(run_id, name)
    assert step is not None, "a wait always has its step"
    done = step.model_copy(update={"status": StepStatus.COMPLETED, "output": output, "ended_at": now})
    tx.save_step(run_id, done)
    tx.append_journal(run_id, kind, now, name, detail=detail)
    run = get_run(tx, run_id, payloads=False)
    if run.status == RunStatus.WAITING and not tx.list_waits(run_id):
        tx.set_runs_status([run_id], RunStatus.RUNNING)


def receive(tx: Transaction, now: datetime, run_id: str, step: str, seq: int, event: Event) -> None:
    """The event (journal sequence ``seq``) ends the run's wait ``step``, consumed by it alone."""
    tx.consume_event(run_id, seq, step)
    output = {"status": "received", "event": event.model_dump(mode="json")}
    detail = {"event_id": event.event_id, "name": event.name, "source": event.source}
    end_wait(tx, now, run_id, step, output, "event_received", detail)


def settle_fan_in(tx: Transaction, now: datetime, waiter_id: str, wait: Wait, *, settle: bool = False) -> None:
    """End the fan-in ``wait`` if the runs it awaits have ended (all of them, or any, by its mode)."""
    runs = awaited_runs(tx, wait.run_ids, settle=settle)
    if fan_in_done(runs, wait.mode or "all"):
        ended = [run.run_id for run in runs if run.status.terminal]
        end_wait(tx, now, waiter_id, wait.step, {"status": "done", "ended": ended}, "runs_ended", {"ended": ended})


def fire_due_waits(tx: Transaction, now: datetime) -> int:
    """End every wait whose timeout or wake time has passed; returns how many."""
    due = tx.due_waits(now)
    for run_id, wait in due:
        when = None if wait.until is None else iso(wait.until)
        if wait.kind == "sleep":  # event and runs waits time out
            end_wait(tx, now, run_id, wait.step, {"status": "done", "wake_at": when}, "woke", {})
        elif wait.kind == "approval":  # an undecided permission request expires: denied, by timeout
            expire_approval(tx, now, wait)
        else:
            end_wait(tx, now, run_id, wait.step, {"status": "timed_out"}, "wait_timed_out", {"until": when})
    return len(due)


def fan_in_done(runs: list[Run], mode: str) -> bool:
    ended = sum(run.status.terminal for run in runs)
    return ended == len(runs) or (mode == "any" and ended > 0)


# Events.


def send_event(tx: Transaction, now: datetime, args: SendEventInput, event_id: str, source: str) -> SendEventResult:
    """Store an event once (by id), end the pending waits it satisfies and cancel the runs it triggers."""
    if tx.has_event(event_id):
        return SendEventResult(event_id=event_id, deduplicated=True, woken_run_ids=[])
    event = Event(event_id=event_id, name=args.name, data=args.data, source=source, received_at=now)
    seq = tx.insert_event(event)
    # A wait being registered on this name takes the same lock: it sees this event, or this sees it.
    tx.lock(event_lock(event.name))
    woken: list[str] = []
    for run_id, wait in tx.waits_for(event.name):
        # Within a run an event is consumed once, by the earliest wait it matches.
        if wait.kind == "event" and run_id not in woken and matches(event, wait.match):
            receive(tx, now, run_id, wait.step, seq, event)
            woken.append(run_id)
        elif wait.kind == "approval" and run_id not in woken:
            decide_approval(tx, now, run_id, wait, seq, event)
            woken.append(run_id)
    cancelled: list[str] = []
    for run_id, match in tx.cancel_triggers_for(event.name, LIVE_RUN_STATUSES):
        if run_id not in cancelled and matches(event, match):
            reason = f"event {event.name!r} ({event.event_id}) arrived"
            cancelled += cancel(tx, now, get_run(tx, run_id, payloads=False), reason, event_seq=seq)
    return SendEventResult(event_id=event_id, deduplicated=False, woken_run_ids=woken, cancelled_run_ids=cancelled)


def matches(event: Event, match: dict[str, Any]) -> bool:
    """Every dotted path of ``match`` (e.g. 'data.pr') leads to an equal value in the event.

    Total: a wait stored before its match was checked (an odd path, a value too deep to compare)
    matches nothing, so it can never make another caller's send_event fail."""
    document = event.model_dump(mode="json")
    try:
        return all(_lookup(document, path) == (True, expected) for path, expected in match.items())
    except (RecursionError, TypeError, ValueError, AttributeError):
        return False


def _lookup(document: Any, path: Any) -> tuple[bool, Any]:
    """(True, the value at the dotted ``path``), or (False, None) when the path leads nowhere."""
    if not isinstance(path, str):
        return False, None
    value = document
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and LIST_INDEX.fullmatch(part) and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


# Approvals: a sub-agent's permission request is a wait (kind 'approval') for the event
# 'approval.<approval_id>', whose data is the decision, so every way of sending an event decides one
# alike. While it waits, its step's output is the request; once decided, {status, request, decision}.

APPROVAL_EVENT_PREFIX = "approval."


def approval_event(approval_id: str) -> str:
    """The name of the event that decides the approval ``approval_id``."""
    return f"{APPROVAL_EVENT_PREFIX}{approval_id}"


def decide_approval(tx: Transaction, now: datetime, run_id: str, wait: Wait, seq: int, event: Event) -> None:
    """The event (journal sequence ``seq``) decides the pending approval ``wait``. Its data must be a
    decision (InvalidInput otherwise, and the event is not stored); a rule-scoped one without a rule
    takes the request's suggested rule."""
    step = tx.get_step(run_id, wait.step)
    request = step.output if step is not None and isinstance(step.output, dict) else {}
    what = f"the decision (data of event {event.name!r})"
    try:
        given = ApprovalDecision.model_validate(event.data)
    except ValidationError as exc:
        raise invalid_input_from(exc, what) from exc
    rule = given.rule
    if given.scope == "rule" and rule is None:
        suggested = request.get("suggested_rule")
        rule = suggested if isinstance(suggested, str) else None
        if rule is None:
            raise InvalidInput(
                f"{what}: no rule can be suggested for this {request.get('tool_name')} call; give the rule "
                "(e.g. 'Bash(npm test:*)'), or decide for this call only (scope 'call')"
            )
    by = given.by or ("agent" if event.source == "tool" else "person")
    decision = given.model_copy(
        update={
            "rule": rule,
            "by": by,
            "source": given.source or event.source,
            "event_id": event.event_id,
            "decided_at": now,
        }
    )
    status = "allowed" if decision.behavior == "allow" else "expired" if by == "timeout" else "denied"
    tx.consume_event(run_id, seq, wait.step)
    output = {"status": status, "request": request, "decision": decision.model_dump(mode="json")}
    detail = {
        "approval_id": request.get("approval_id"),
        "tool_name": request.get("tool_name"),
        **decision.model_dump(mode="json", include={"behavior", "scope", "rule", "by", "source", "event_id"}),
    }
    end_wait(tx, now, run_id, wait.step, output, "permission_decided", detail)
    words = f"{request.get('tool_name')} {status} by {by}" + (f": {decision.message}" if decision.message else "")
    note_for_run(tx, run_id, now, "permission", words, None)  # trimmed at the agent's next report


def expire_approval(tx: Transaction, now: datetime, wait: Wait) -> None:
    """Deny the undecided approval ``wait`` by timeout: a decision sent as its event, like any other."""
    when = "" if wait.until is None else f" at {iso(wait.until)}"
    data = {
        "behavior": "deny",
        "message": f"nobody decided on this request before it expired{when}",
        "by": "timeout",
        "source": "expiry",
    }
    for name in wait.events:
        send_event(tx, now, SendEventInput(name=name, data=data), new_id(), "system")


# Sub-agents.


def queue_agent(
    tx: Transaction, now: datetime, args: StartRunInput, agent: Agent, max_turns: int | None = None
) -> SpawnSubagentResult:
    """Write a prepared spawn: its run (queued), its process record and the journal; or return the
    sub-agent that already has ``args.key``. Its account at a usage limit holds it from the start."""
    started = create_run(tx, now, args, agent.run_id, status=RunStatus.QUEUED, max_turns=max_turns)
    if not started.created:
        return existing_agent(tx, started.run)
    if (held := account_gate(tx, now, agent.limit_account)) is not None:
        until, reason = held
        agent = agent.model_copy(update={"start_after": until, "paused_until": until, "paused_reason": reason})
    tx.save_agent(agent)
    tx.append_journal(agent.run_id, "subagent_queued", now, detail={"agent": agent.profile, "cwd": agent.cwd})
    if args.parent_run_id is not None:
        tx.append_journal(args.parent_run_id, "subagent_spawned", now, detail={"run_id": agent.run_id})
    return SpawnSubagentResult(run=started.run, created=True, process=agent)


# Usage limits belong to an account, not to one sub-agent: a gate (a lease named after the account,
# its holder the reason) holds every sub-agent of the account until the limit resets.


def gate_lease(account: str) -> str:
    return f"gate:{account}"


def account_gate(tx: Transaction, now: datetime, account: str) -> tuple[datetime, str] | None:
    """(until, why) while ``account`` is held at a usage limit; None when it is not."""
    lease = tx.get_lease(gate_lease(account))
    return None if lease is None or lease[1] <= now else (lease[1], lease[0])


def hold_account(tx: Transaction, now: datetime, account: str, until: datetime, reason: str) -> None:
    """Hold ``account`` until ``until``: its queued sub-agents start no earlier, and say why."""
    name = gate_lease(account)
    tx.lock(lease_lock(name))
    current = account_gate(tx, now, account)
    if current is None or current[0] < until:
        tx.put_lease(name, reason, until)
    for agent in tx.agents_in([AgentState.QUEUED]):
        if agent.limit_account == account and (agent.start_after is None or agent.start_after < until):
            tx.save_agent(
                agent.model_copy(update={"start_after": until, "paused_until": until, "paused_reason": reason})
            )
            tx.append_journal(agent.run_id, "held", now, detail={"reason": reason, "until": iso(until)})


def release_account(tx: Transaction, now: datetime, account: str) -> None:
    """Lift ``account``'s gate now (a person says the limit is over): its held sub-agents may start."""
    tx.lock(lease_lock(gate_lease(account)))
    if (held := tx.get_lease(gate_lease(account))) is not None:
        tx.delete_lease(gate_lease(account), held[0])
    for agent in tx.agents_in([AgentState.QUEUED]):
        if agent.limit_account == account and agent.paused_until is not None:
            tx.save_agent(agent.model_copy(update={"start_after": now, "paused_until": None, "paused_reason": None}))


def existing_agent(tx: Transaction, run: Run) -> SpawnSubagentResult:
    """The sub-agent behind ``run`` (found by its key); KeyConflict when the run is not a sub-agent."""
    agent = tx.get_agent(run.run_id)
    if agent is None:
        raise KeyConflict(
            f"key {run.key!r} already belongs to run {run.run_id}, which is not a sub-agent; use another key",
            key=run.key,
            run_id=run.run_id,
        )
    return SpawnSubagentResult(run=run, created=False, process=agent)


# What sub-agents spend. A run's ``usage`` is what its own agent's attempts spent; its ``tree_usage``
# adds every descendant's: an attempt's spending is added to both on its run and to the tree of each
# ancestor as it is reported, so a tree's figures (and its budget) are read from one row.


def add_usage(tx: Transaction, run_id: str, spent: Usage) -> None:
    """Add what an attempt spent (beyond what it had already reported) to its run and its ancestors' trees."""
    if spent.cost_usd <= 0 and spent.tokens <= 0 and spent.turns <= 0:
        return
    run = get_run(tx, run_id, payloads=False)
    tx.set_run_usage(run_id, (run.usage or Usage()).plus(spent), (run.tree_usage or Usage()).plus(spent))
    for ancestor_id in tx.ancestor_ids(run_id):
        ancestor = tx.get_run(ancestor_id, payloads=False)
        if ancestor is not None:
            tx.set_run_usage(ancestor_id, ancestor.usage, (ancestor.tree_usage or Usage()).plus(spent))


def check_below(tx: Transaction, run_id: str, agent_run: str | None, acts_on: str, **details: Any) -> None:
    """A sub-agent's own server (``agent_run``: the run it serves; None: not a sub-agent's) steers only the
    runs below its own, never its own or an ancestor's: NotAllowed otherwise, saying what it ``acts_on``
    (e.g. "sets the budgets of")."""
    if agent_run is None or agent_run in tx.ancestor_ids(run_id):
        return
    raise NotAllowed(
        f"run {run_id} is not below run {agent_run} (the run this sub-agent works on): an agent {acts_on} only "
        "the sub-agents it spawned (and theirs)",
        run_id=run_id,
        **details,
    )


@dataclass(frozen=True)
class BudgetLeft:
    """What a run may still spend under the tightest budget over it and its ancestors (None: no cap)."""

    usd: float | None = None
    turns: int | None = None
    spent_usd: float = 0.0  # by the tree whose budget is the tightest
    limit_usd: float | None = None
    holder: str | None = None  # the run whose budget that is

    @property
    def reached(self) -> bool:
        return (self.usd is not None and self.usd <= 0) or (self.turns is not None and self.turns <= 0)

    def describe(self) -> str:
        """In words, e.g. "budget reached: $0.0421 of $0.0400 (run 01H...'s tree)"."""
        if self.usd is not None and self.usd <= 0 and self.limit_usd is not None:
            return f"budget reached: ${self.spent_usd:.4f} of ${self.limit_usd:.4f} (run {self.holder}'s tree)"
        if self.turns is not None and self.turns <= 0:
            return "budget reached: its max_turns are used up"
        return "within budget"


def budget_left(tx: Transaction, run: Run) -> BudgetLeft:
    """The budget left to ``run``'s agent: the least of its tree budget's and each ancestor's, and its turns."""
    left = BudgetLeft()
    if run.budget is not None and run.budget.max_turns is not None:
        left = BudgetLeft(turns=run.budget.max_turns - (run.usage.turns if run.usage else 0))
    chain = [run, *(tx.peek_runs(tx.ancestor_ids(run.run_id)) if run.parent_run_id else [])]
    for holder in chain:
        if holder is None or holder.budget is None or holder.budget.max_budget_usd is None:
            continue
        spent = holder.tree_usage.cost_usd if holder.tree_usage else 0.0
        usd = holder.budget.max_budget_usd - spent
        if left.usd is None or usd < left.usd:
            limit = holder.budget.max_budget_usd
            left = BudgetLeft(usd=usd, turns=left.turns, spent_usd=spent, limit_usd=limit, holder=holder.run_id)
    return left


BUDGET_STEP = "budget-"  # the wait step of a pause at a budget: budget-<n>


def pause_at_budget(tx: Transaction, now: datetime, run: Run, agent: Agent, left: BudgetLeft, cap: int) -> Agent:
    """Pause the sub-agent's run at its budget: a wait of kind 'budget' that ``set_budget`` ends once the
    budget is raised (or a cancel ends the run). Returns the agent, to be resumed when it goes on."""
    paused = len(tx.list_steps(run.run_id, kind="budget"))
    reason = left.describe()
    wait = Wait(step=f"{BUDGET_STEP}{paused + 1}", kind="budget", created_at=now)
    open_wait(tx, run.run_id, wait)
    detail = {"reason": reason, "spent_usd": left.spent_usd, "limit_usd": left.limit_usd, "holder": left.holder}
    tx.append_journal(run.run_id, "budget_reached", now, wait.step, attempt=agent.attempt or None, detail=detail)
    agent = note(tx, agent, now, "budget", reason, cap)
    return agent.model_copy(update={"resume": agent.attempt > 0})


def budget_waits(tx: Transaction, run_id: str) -> list[Wait]:
    return [wait for wait in tx.list_waits(run_id) if wait.kind == "budget"]


def end_budget_wait(tx: Transaction, now: datetime, run_id: str, wait: Wait, why: str) -> None:
    end_wait(tx, now, run_id, wait.step, {"status": "raised", "message": why}, "budget_raised", {"message": why})


# Activity: a sub-agent's timeline, capped per run (the oldest entries dropped and counted).


def record_activity(tx: Transaction, agent: Agent, entries: Sequence[Activity], dropped: int, cap: int | None) -> Agent:
    """Append ``entries`` to the agent's run, keep the newest ``cap`` (None: leave that to the next call
    that knows the cap); returns the agent with its count of dropped entries grown (the caller saves it)."""
    if entries:
        tx.append_activity(agent.run_id, entries)
        dropped += tx.trim_activity(agent.run_id, cap) if cap is not None else 0
    return agent.model_copy(update={"activity_dropped": agent.activity_dropped + dropped}) if dropped else agent


def note(tx: Transaction, agent: Agent, now: datetime, kind: ActivityKind, summary: str, cap: int | None) -> Agent:
    """One entry of the orchestrator's own (a decision, a pause, a message) in the agent's timeline."""
    entry = Activity(at=now, attempt=agent.attempt or None, kind=kind, summary=one_line(summary))
    return record_activity(tx, agent, [entry], 0, cap)


def note_for_run(
    tx: Transaction, run_id: str, now: datetime, kind: ActivityKind, summary: str, cap: int | None
) -> None:
    """``note`` for a run that may be a sub-agent's (its agent saved); nothing for any other run."""
    agent = tx.get_agent(run_id)
    if agent is not None:
        tx.save_agent(note(tx, agent, now, kind, summary, cap))


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# Messages to sub-agents: queued, then delivered to one attempt (live, in a resume prompt, or read from
# its inbox), or dropped when the run ends first.


def deliver_messages(
    tx: Transaction,
    now: datetime,
    agent: Agent,
    messages: Sequence[Message],
    how: Literal["live", "resume", "inbox"],
    cap: int,
    attempt: int | None = None,
) -> tuple[Agent, list[Message]]:
    """Mark the queued ``messages`` delivered to ``attempt`` (default: the agent's current one); returns the
    agent (its timeline grown) and the messages as delivered."""
    attempt = attempt or agent.attempt or None
    delivered = []
    for message in messages:
        if message.status != "queued":
            continue
        update = {"status": "delivered", "delivered_at": now, "attempt": attempt, "how": how}
        delivered.append(message.model_copy(update=update))
        tx.save_message(delivered[-1])
        detail = {"message_id": message.message_id, "how": how}
        tx.append_journal(agent.run_id, "message_delivered", now, attempt=attempt, detail=detail)
    words = [f"message delivered ({how}): {m.text}" for m in delivered]
    entries = [Activity(at=now, attempt=attempt, kind="message", summary=one_line(text)) for text in words]
    return record_activity(tx, agent, entries, 0, cap), delivered


def drop_messages(tx: Transaction, now: datetime, run_ids: Sequence[str]) -> None:
    """Messages still queued for runs that ended: dropped, each journaled."""
    while queued := tx.messages_of(run_ids, ["queued"], 1000):
        for message in queued:
            tx.save_message(message.model_copy(update={"status": "dropped"}))
            detail = {"message_id": message.message_id, "reason": "the run ended before it was delivered"}
            tx.append_journal(message.run_id, "message_dropped", now, detail=detail)


# Time.


def after(now: datetime, seconds: float | None) -> datetime | None:
    return None if not seconds else now + timedelta(seconds=seconds)


def iso(value: datetime) -> str:
    """A time as the journal and the outputs write it: ISO 8601 in UTC, with a Z."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
