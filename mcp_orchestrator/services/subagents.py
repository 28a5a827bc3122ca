"""Sub-agents' lifecycle: spawned, claimed within limits, started, heartbeating, exited, reaped.

The decisions only, each one store transaction; launching and killing processes is the
supervisor's and the runner's (``agents/launch.py``, ``runner.py``). A sub-agent is a run (its work: steps, waits,
result) plus an ``Agent`` record (its process). The process states:

    queued --claim--> starting --runner started--> live --exit--> done (run ended)
       ^                                            |   `-------> idle (run waits; no process)
       |                                            |                 | the wait ends
       `---- crashed, timed out, non-zero exit -----'  <--------------'  (resume)
             (backoff, while attempts remain)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from .. import transitions
from ..agents import worktree
from ..agents.streams import Limit
from ..errors import InvalidInput, OrchestratorError, short_json
from ..ids import new_id
from ..models import (
    ACTIVE_AGENT_STATES,
    LIVE_RUN_STATUSES,
    TERMINAL_RUN_STATUSES,
    Activity,
    Agent,
    AgentState,
    ExitHow,
    Message,
    Run,
    RunStatus,
    SpawnSubagentInput,
    SpawnSubagentResult,
    Step,
    StepStatus,
    Usage,
    Wait,
)
from ..profiles import NUL, AgentProfile, Launch, uses_prompt
from ..store.base import AgentRule, Transaction
from ..transitions import BudgetLeft
from .context import Context
from .spawns import Spawns

LEASE = "supervisor"

# Which sub-agents the supervisor acts on, by their state and their run's status.
# To start (once their start_after has come): queued ones whose run is live and not waiting, and idle
# ones whose run's waits have ended.
STARTABLE: AgentRule = {AgentState.QUEUED: {RunStatus.QUEUED, RunStatus.RUNNING}, AgentState.IDLE: {RunStatus.RUNNING}}
# To mark done: queued or idle ones whose run has ended (cancelled before it started, say).
RETIRED: AgentRule = {AgentState.QUEUED: TERMINAL_RUN_STATUSES, AgentState.IDLE: TERMINAL_RUN_STATUSES}
# Whose start_after is the next time to look: queued ones of live runs (a retry's backoff).
BACKED_OFF: AgentRule = {AgentState.QUEUED: LIVE_RUN_STATUSES}


def node_lease(node: str) -> str:
    """The lease of the process that starts and watches sub-agents on a node: one per node."""
    return f"node:{node}"


PAUSE_STEP = "usage-limit-"  # the durable timer step of a pause at a usage limit: usage-limit-<attempt>
START_TIMEOUT_S = 60.0  # a claimed sub-agent whose runner never reported is lost after this
EXIT_AFTER_FINISH_S = 30.0  # an agent that finished its run is killed if it has not exited by then
# What a runner is told at start and each heartbeat: go on, stop (the run ended elsewhere), or kill the
# agent because its attempt timed out, its budget is reached, or it has been silent too long (by policy).
Verdict = Literal["continue", "stop", "timeout", "budget", "silent"]
LIVE_MESSAGES = 20  # queued messages handed to a runner at one heartbeat


@dataclass(frozen=True)
class Beat:
    """The answer to a runner's report: the verdict, and (for live input) the messages to write now."""

    verdict: Verdict
    messages: list[Message] = field(default_factory=list)


PREAMBLE = """\
You are a background sub-agent started by mcp-orchestrator; your run id is {run_id}. The \
orchestrator's MCP tools are available to you (server "orchestrator"), on the same store as the \
agent that started you. Use them with run_id="{run_id}":
- checkpoint(run_id, step, begin=true) before a step with side effects (replayed=true: it is done, \
use its output), and checkpoint(run_id, step, output=...) after it;
- to wait for an event or a time, call wait_for_event or sleep; if it returns "waiting" or \
"sleeping", end your work and exit: you will be started again when it is over;
- finish_run(run_id, output=<your result>) when the task is done (or error=... if it cannot be);
- read_messages(run_id) between steps: what the person or agent that started you has told you since.
Your process may be stopped and resumed; completed steps stay done.

Task:
"""


class Subagents:
    """Sub-agents' decisions (see the module docstring)."""

    def __init__(self, context: Context, spawns: Spawns) -> None:
        self.context = context
        self.store = context.store
        self.spawns = spawns
        self.config = spawns.config

    # Spawning.

    async def spawn(self, args: SpawnSubagentInput) -> SpawnSubagentResult:
        """Queue a sub-agent as a child run, or return the one that already has ``args.key``."""
        self.spawns.profile_for(args)  # an unknown profile is named before anything else
        if args.key is not None and (existing := await self._by_key(args.key)) is not None:
            return existing
        parent_id = args.parent_run_id
        parent = await self.store.read(lambda tx: tx.get_run(parent_id)) if parent_id else None
        run_args, agent, max_turns = self.spawns.prepare(args, parent, new_id())
        tree = await worktree.create(agent.cwd, agent.run_id) if args.worktree else None  # never blocks the loop
        if tree is not None:
            agent = agent.model_copy(update={"cwd": str(tree.path), "worktree": str(tree.path), "branch": tree.branch})
        result = await self.store.write(
            lambda tx: transitions.queue_agent(tx, self.context.now(), run_args, agent, max_turns)
        )
        if tree is not None and not result.created:
            await worktree.remove(tree)  # another spawn with the same key won the race
        return result

    async def _by_key(self, key: str) -> SpawnSubagentResult | None:
        def read(tx: Transaction) -> SpawnSubagentResult | None:
            run = tx.get_run_by_key(key)
            return None if run is None else transitions.existing_agent(tx, run)

        return await self.store.read(read)

    # The supervisor's duties. Each reads first and writes only when there is something to do, so
    # that an idle supervisor, woken by every commit, costs a read.

    async def hold_lease(self, holder: str, name: str = LEASE) -> bool:
        """Take or renew a lease (the supervisor's, by default); False while another live holder has it."""
        lease = await self.store.read(lambda tx: tx.get_lease(name))
        if lease is not None and lease[0] != holder and lease[1] > self.context.now():
            return False

        def hold(tx: Transaction) -> bool:
            now = self.context.now()
            tx.lock(transitions.lease_lock(name))  # the lease may not be a row yet: two takers take turns
            current = tx.get_lease(name)
            if current is not None and current[0] != holder and current[1] > now:
                return False
            tx.put_lease(name, holder, now + timedelta(seconds=self.config.lease_ttl_s))
            return True

        # Quiet: nobody waits for a renewal (a process waiting to take a lease over polls by time), and
        # waking every waiter (dashboards included) every few seconds for it would cost each a read.
        return await self.store.write(hold, wake=False)

    async def release_lease(self, holder: str, name: str = LEASE) -> None:
        await self.store.write(lambda tx: tx.delete_lease(name, holder))

    async def lease_holder(self, name: str = LEASE) -> tuple[str, datetime] | None:
        """Who holds the lease (the supervisor's, by default) and until when; None when nobody does or it expired."""
        lease = await self.store.read(lambda tx: tx.get_lease(name))
        return lease if lease is not None and lease[1] > self.context.now() else None

    async def claim(self, node: str | None = None) -> list[Launch]:
        """Claim the sub-agents to start now, within the limits, as ``starting`` on ``node`` (the
        claimed agents belong to it: their ``host``)."""
        # Decided on a read first: a write would wake every waiter, the supervisor included.
        if not await self.store.read(
            lambda tx: any(self._pick(tx, self.context.now(), node)) or tx.agents_by_run_status(RETIRED)
        ):
            return []
        return await self.store.write(lambda tx: self._claim(tx, node))

    def _pick(
        self, tx: Transaction, now: datetime, node: str | None
    ) -> tuple[list[tuple[Agent, AgentProfile | None, BudgetLeft]], list[tuple[Agent, BudgetLeft]]]:
        """The startable sub-agents that the limits let start now (with their profile, None if it is gone,
        and the budget they have left), and those that would start but whose budget is reached."""
        active = tx.agents_in(sorted(ACTIVE_AGENT_STATES))
        free = self.config.max_concurrent - len(active)
        if node is not None and self.config.node_max_concurrent is not None:
            free = min(free, self.config.node_max_concurrent - sum(agent.host == node for agent in active))
        by_profile = Counter(agent.profile for agent in active)
        by_key = Counter(agent.concurrency_key for agent in active if agent.concurrency_key)
        gates: dict[str, bool] = {}  # accounts held at a usage limit, read once per account
        picked: list[tuple[Agent, AgentProfile | None, BudgetLeft]] = []
        spent: list[tuple[Agent, BudgetLeft]] = []
        for agent in tx.agents_by_run_status(STARTABLE, start_by=now, limit=1000) if free > 0 else []:
            if len(picked) >= free:
                break
            account = agent.limit_account
            if account not in gates:
                gates[account] = transitions.account_gate(tx, now, account) is not None
            if gates[account]:
                continue
            profile = self.config.profiles.get(agent.profile)
            key = agent.concurrency_key
            profile_limit = profile.max_concurrent if profile is not None else None
            if profile_limit is not None and by_profile[agent.profile] >= profile_limit:
                continue
            if key and by_key[key] >= (agent.concurrency_limit or self.config.key_limit(key)):
                continue
            left = transitions.budget_left(tx, self._run(tx, agent.run_id))
            if left.reached:
                spent.append((agent, left))
                continue
            by_profile[agent.profile] += 1
            if key:
                by_key[key] += 1
            picked.append((agent, profile, left))
        return picked, spent

    def _claim(self, tx: Transaction, node: str | None) -> list[Launch]:
        now = self.context.now()
        tx.lock(transitions.AGENT_LIMITS)  # claims and reaps take turns: the limits count what each leaves active
        for agent in tx.agents_by_run_status(RETIRED):  # their run ended before (or while) they had no process
            tx.save_agent(agent.model_copy(update={"state": AgentState.DONE, "start_after": None}))
        launches: list[Launch] = []
        picked, spent = self._pick(tx, now, node)
        for agent, left in spent:  # a tree over its budget starts no new sub-agent
            tx.save_agent(self._budget_pause(tx, self._run(tx, agent.run_id), agent, left, now))
        for agent, profile, left in picked:
            if profile is None:
                error = {"type": "config", "message": f"agent profile {agent.profile!r} is no longer configured"}
                transitions.end_runs(tx, now, [agent.run_id], RunStatus.FAILED, "run_failed", error, error=error)
                tx.save_agent(agent.model_copy(update={"state": AgentState.DONE}))
                continue
            use_session = bool(agent.resume and profile.resume and agent.session_id)
            prompt, agent = self._prompt(tx, agent, profile, use_session, now)
            claimed = agent.model_copy(
                update={
                    "state": AgentState.STARTING,
                    "attempt": agent.attempt + 1,
                    "resume": False,
                    "start_after": None,
                    "launched_at": now,
                    **_NO_PROCESS,
                    "host": node,
                    "paused_until": None,
                    "paused_reason": None,
                    "attempt_usage": None,
                    "active_at": None,
                }
            )
            tx.save_agent(claimed)
            budget = left.usd  # Claude Code's cap counts what this process spends, not its session's total
            launches.append(Launch(claimed, profile, prompt, use_session, budget, left.turns))
        return launches

    def _prompt(
        self, tx: Transaction, agent: Agent, profile: AgentProfile, use_session: bool, now: datetime
    ) -> tuple[str, Agent]:
        """The first prompt: preamble and task. A resume: what happened since, after the task unless
        the harness resumes its own session (which remembers the task). Messages queued for the agent
        go at the end, delivered to this attempt (if the profile passes the prompt on at all)."""
        first = PREAMBLE.format(run_id=agent.run_id) + agent.prompt
        queued = tx.messages_of([agent.run_id], ["queued"], 50) if uses_prompt(profile) else []
        if queued:  # delivered to the attempt about to start
            cap = self.config.activity_max
            agent, _ = transitions.deliver_messages(tx, now, agent, queued, "resume", cap, agent.attempt + 1)
        told = _messages_note(queued)
        if not agent.resume:
            return (f"{first}\n\n{told}" if told else first), agent
        notes = [f"You are resumed: run {agent.run_id}, process attempt {agent.attempt + 1}."]
        if agent.paused_until is not None:
            notes.append(
                f"Your previous process stopped at a usage limit ({agent.paused_reason}); it has reset. "
                "Go on from where you were."
            )
        elif agent.exit_code is not None and _raised(tx, agent):
            notes.append("Your previous process stopped at its budget, which has been raised: go on from there.")
        elif agent.exit_code != 0:
            ended = "was lost" if agent.exit_code is None else f"exited with code {agent.exit_code}"
            notes.append(f"Your previous process {ended} before finishing; check what it left half done.")
        steps = tx.list_steps(agent.run_id)
        for step in steps:
            ended_since = step.ended_at is not None and agent.exited_at is not None and step.ended_at >= agent.exited_at
            paused = step.step.startswith(PAUSE_STEP)
            if step.kind == "approval" and step.status == StepStatus.COMPLETED and ended_since and not _answered(step):
                notes.append(_decided(step.output))
            elif step.kind != "checkpoint" and not paused and step.status == StepStatus.COMPLETED and ended_since:
                notes.append(f"Your wait {step.step!r} ended: {short_json(step.output, 500)}")
        done = [step.step for step in steps if step.status == StepStatus.COMPLETED]
        if done:
            notes.append(f"Completed steps (their outputs are stored; do not redo them): {', '.join(done[:50])}.")
        if told:
            notes.append(told)
        notes.append(f'Continue the task; call finish_run(run_id="{agent.run_id}", output=...) when it is done.')
        # What a wait delivered and the step names are stored data, not the caller's checked prompt: made
        # passable, so that a resume under a profile that puts the prompt in argv can always be launched.
        resume = "\n".join(notes).replace(NUL, "\\x00").encode("utf-8", "backslashreplace").decode()
        return (resume if use_session else f"{first}\n\n{resume}"), agent

    async def next_start(self) -> datetime | None:
        """When the next backed-off retry becomes due."""
        return await self.store.read(lambda tx: tx.earliest_start_after(BACKED_OFF))

    async def reap(self, host: str, alive: Callable[[Agent], bool]) -> list[Agent]:
        """Handle sub-agents whose runner died without recording an exit: silent past the heartbeat
        timeout, or (on this host) whose runner pid is gone. Returns them, for their groups to be killed."""
        now = self.context.now()
        active = await self.store.read(lambda tx: tx.agents_in(sorted(ACTIVE_AGENT_STATES)))
        if not any(self._lost(agent, now, host, alive) for agent in active):
            return []

        def reap(tx: Transaction) -> list[Agent]:
            now = self.context.now()
            tx.lock(transitions.AGENT_LIMITS)  # takes turns with claims (see _claim)
            lost = [a for a in tx.agents_in(sorted(ACTIVE_AGENT_STATES)) if self._lost(a, now, host, alive)]
            for agent in lost:
                message = "its runner stopped without recording an exit (killed, or the machine restarted)"
                self._exit(tx, agent.run_id, agent.attempt, None, None, None, "lost", message)
            return lost

        return await self.store.write(reap)

    def _lost(self, agent: Agent, now: datetime, host: str, alive: Callable[[Agent], bool]) -> bool:
        # Checked inside the write transaction too: a runner records its exit before it ends, so one
        # that is gone while its record still says live died without recording.
        if agent.state == AgentState.STARTING:
            return agent.launched_at is not None and now - agent.launched_at > timedelta(seconds=START_TIMEOUT_S)
        silent = agent.heartbeat_at is None or now - agent.heartbeat_at > timedelta(
            seconds=self.config.heartbeat_timeout_s
        )
        return silent or (agent.host == host and not alive(agent))

    # The runner's reports.

    async def started(
        self, run_id: str, attempt: int, *, pid: int, pgid: int, host: str, at: datetime, log_dir: str
    ) -> Verdict:
        """The runner started the agent's process; "stop" if this attempt is no longer wanted."""

        def record(tx: Transaction) -> Verdict:
            agent = tx.get_agent(run_id)
            if agent is None or agent.attempt != attempt or agent.state != AgentState.STARTING:
                return "stop"  # reaped as lost meanwhile: another attempt may be under way
            run = self._run(tx, run_id)
            now = self.context.now()
            if run.status.terminal:
                return "stop"
            deadline = at + timedelta(seconds=agent.timeout_s) if agent.timeout_s else None
            update = {"state": AgentState.LIVE, "pid": pid, "pgid": pgid, "host": host, "log_dir": log_dir}
            live = agent.model_copy(
                update={**update, "started_at": at, "heartbeat_at": now, "attempt_deadline": deadline}
            )
            tx.save_agent(live)
            if run.status == RunStatus.QUEUED:
                tx.set_runs_status([run_id], RunStatus.RUNNING)
                tx.append_journal(run_id, "run_started", now)
            detail = {"pid": pid, "host": host, "agent": agent.profile}
            tx.append_journal(run_id, "process_started", at, attempt=attempt, detail=detail)
            return "continue"

        return await self.store.write(record)

    async def session_started(self, run_id: str, attempt: int, session_id: str) -> Verdict:
        """The harness printed its session id: kept at once, so that an attempt killed or crashed from
        here on is resumed in that session. Counts as a heartbeat."""

        def record(tx: Transaction) -> Verdict:
            agent = tx.get_agent(run_id)
            if agent is None or agent.attempt != attempt or agent.state != AgentState.LIVE:
                return "stop"
            tx.save_agent(agent.model_copy(update={"session_id": session_id[:200], "heartbeat_at": self.context.now()}))
            tx.append_journal(
                run_id, "session_started", self.context.now(), attempt=attempt, detail={"session_id": session_id[:200]}
            )
            return "continue"

        return await self.store.write(record, wake=False)

    async def heartbeat(self, run_id: str, attempt: int) -> Verdict:
        """Still alive; the answer says whether to go on, stop (the run ended) or kill for timeout."""
        return (await self.report(run_id, attempt)).verdict

    async def report(
        self,
        run_id: str,
        attempt: int,
        *,
        activity: Sequence[Activity] = (),
        dropped: int = 0,
        usage: Usage | None = None,
        active_at: datetime | None = None,
        delivered: Sequence[str] = (),
        live_input: bool = False,
    ) -> Beat:
        """A runner's heartbeat with what it read since the last one, in one write: activity entries
        (capped per run), the attempt's spending so far (rolled up into the run's tree), when its output
        last showed activity, and the messages it wrote to the agent. The verdict says whether to go on;
        with ``live_input``, queued messages come back to be written to the agent."""

        def beat(tx: Transaction) -> Beat:
            agent = tx.get_agent(run_id)
            if agent is None or agent.attempt != attempt or agent.state != AgentState.LIVE:
                return Beat("stop")
            run = self._run(tx, run_id)
            now = self.context.now()
            reported = (activity, dropped, usage, active_at, delivered)
            agent = self._take_report(tx, run, agent, now, *reported)
            verdict = self._verdict(tx, run, agent, now)
            tx.save_agent(agent.model_copy(update={"heartbeat_at": now}))
            live = live_input and verdict == "continue"
            return Beat(verdict, tx.messages_of([run_id], ["queued"], LIVE_MESSAGES) if live else [])

        # Quiet: every live agent reports every second, and waking every waiter of every node for it
        # would cost each of them a read per beat, for news no wait or duty depends on (a lost runner is
        # found by time). Pages watching every commit still see activity and spending (on PostgreSQL,
        # other nodes' pages look again now and then). A delivery wakes: its sender may be waiting.
        return await self.store.write(beat, wake=bool(delivered))

    def _take_report(
        self,
        tx: Transaction,
        run: Run,
        agent: Agent,
        now: datetime,
        activity: Sequence[Activity],
        dropped: int,
        usage: Usage | None,
        active_at: datetime | None,
        delivered: Sequence[str],
    ) -> Agent:
        """Record what a runner read (see ``report``); returns the agent (not saved)."""
        cap = self.config.activity_max
        entries = [entry.model_copy(update={"attempt": agent.attempt}) for entry in activity]
        agent = transitions.record_activity(tx, agent, entries, dropped, cap)
        if usage is not None:
            before = agent.attempt_usage or Usage()
            spent = before.at_least(usage)  # a report never lowers what was reported
            transitions.add_usage(tx, run.run_id, spent.minus(before))
            agent = agent.model_copy(update={"attempt_usage": spent})
        if active_at is not None and (agent.active_at is None or active_at > agent.active_at):
            agent = agent.model_copy(update={"active_at": active_at})
        if delivered:
            ids = set(delivered)
            written = [m for m in tx.messages_of([run.run_id], ["queued"], 1000) if m.message_id in ids]
            agent, _ = transitions.deliver_messages(tx, now, agent, written, "live", cap)
        return agent

    def _verdict(self, tx: Transaction, run: Run, agent: Agent, now: datetime) -> Verdict:
        if run.status == RunStatus.CANCELLED or (
            run.ended_at is not None and now - run.ended_at > timedelta(seconds=EXIT_AFTER_FINISH_S)
        ):
            return "stop"  # a finished agent gets a while to exit by itself
        if run.status.terminal:
            return "continue"
        if agent.attempt_deadline is not None and now >= agent.attempt_deadline:
            return "timeout"
        if transitions.budget_left(tx, self._run(tx, run.run_id)).reached:
            return "budget"  # its spending, just rolled up, is read back
        if self.config.on_silent != "flag" and (silent := self.silent_for(agent, now)) is not None:
            tx.append_journal(run.run_id, "silent", now, attempt=agent.attempt, detail={"silent_s": round(silent)})
            if self.config.on_silent == "cancel":
                transitions.cancel(tx, now, run, f"silent for {silent / 60:.0f} min (on_silent = cancel)")
                tx.wake()  # a report is quiet, but this one ended a run
                return "stop"
            return "silent"
        return "continue"

    async def silences(self) -> dict[str, float]:
        """Run id -> seconds silent, of every live sub-agent past ``silent_after_s`` (one read)."""
        now = self.context.now()
        live = await self.store.read(lambda tx: tx.agents_in([AgentState.LIVE]))
        return {agent.run_id: silent for agent in live if (silent := self.silent_for(agent, now)) is not None}

    def silent_for(self, agent: Agent, now: datetime) -> float | None:
        """Seconds a live agent's output has shown no activity, once past ``silent_after_s`` (else None)."""
        since = agent.active_at or agent.started_at
        limit = self.config.silent_after_s
        if agent.state != AgentState.LIVE or since is None or limit is None:
            return None
        silent = (now - since).total_seconds()
        return silent if silent >= limit else None

    async def exited(
        self,
        run_id: str,
        attempt: int,
        exit_code: int | None,
        *,
        how: ExitHow = "exited",
        output: Any = None,
        session_id: str | None = None,
        message: str | None = None,
        retry: bool = True,
        limit: Limit | None = None,
        usage: Usage | None = None,
        stopped_by: Literal["budget", "turns"] | None = None,
        activity: Sequence[Activity] = (),
        dropped: int = 0,
        delivered: Sequence[str] = (),
    ) -> None:
        """The agent's process ended. Unless the agent finished its run itself, its exit decides:
        0 without a ``message`` (the harness's own error) completes the run with ``output``; a
        ``limit`` (the account's usage limit, or the model overloaded) pauses it without counting an
        attempt; anything else is a failed attempt (retried while attempts remain, unless ``retry``
        is False: a launch that would fail the same way again). A run that waits keeps waiting
        without a process. An attempt stopped at its budget (by the harness, ``stopped_by``, or by the
        supervisor, how="budget"), or that ended over it, pauses the run until the budget is raised."""
        self.context.check_payload("output", output)

        def record(tx: Transaction) -> None:
            agent = tx.get_agent(run_id)
            if agent is None or agent.attempt != attempt or agent.state not in ACTIVE_AGENT_STATES:
                return  # a stale report: this attempt was already reaped
            run = self._run(tx, run_id)
            now = self.context.now()
            reported = (activity, dropped, usage, None, delivered)
            tx.save_agent(self._take_report(tx, run, agent, now, *reported))
            self._exit(tx, run_id, attempt, exit_code, output, session_id, how, message, retry, limit, stopped_by)

        await self.store.write(record)

    def _exit(
        self,
        tx: Transaction,
        run_id: str,
        attempt: int,
        exit_code: int | None,
        output: Any,
        session_id: str | None,
        how: ExitHow,
        message: str | None,
        retry: bool = True,
        limit: Limit | None = None,
        stopped_by: Literal["budget", "turns"] | None = None,
    ) -> None:
        agent = tx.get_agent(run_id)
        if agent is None or agent.attempt != attempt or agent.state not in ACTIVE_AGENT_STATES:
            return  # a stale report: this attempt was already reaped
        run = self._run(tx, run_id)
        now = self.context.now()
        agent = agent.model_copy(
            update={"exited_at": now, "exit_code": exit_code, "session_id": session_id or agent.session_id}
        )
        detail: dict[str, Any] = {"how": how, "exit_code": exit_code, "pid": agent.pid}
        if agent.attempt_usage is not None:
            detail["usage"] = agent.attempt_usage.model_dump(mode="json", exclude_defaults=True)
        tx.append_journal(run_id, "process_exited", now, attempt=attempt, detail=detail)
        clean = how == "exited" and exit_code == 0 and message is None
        left = transitions.budget_left(tx, run) if not clean and not run.status.terminal else None
        if left is not None and (how == "budget" or stopped_by is not None or left.reached):
            if not left.reached:  # the harness stopped at the cap it was given: say so in its words
                left = BudgetLeft(turns=0) if stopped_by == "turns" else left
            agent = self._budget_pause(tx, run, agent, left, now)
            state = AgentState.IDLE  # waits for its budget to be raised, holding no process
        elif limit is not None and not clean and not run.status.terminal:
            agent = self._pause(tx, run, agent, limit, message, now)
            state = AgentState.IDLE  # waits on the durable timer of its pause, holding no process
        elif run.status.terminal:
            state = AgentState.DONE
        elif clean and run.status == RunStatus.WAITING:
            state = AgentState.IDLE  # waits without a process; started again when the wait ends
            agent = agent.model_copy(update={"resume": True})
        elif clean and self._waited_during(tx, agent):
            state = AgentState.QUEUED  # its wait ended as it exited: resume it to see the result
            agent = agent.model_copy(update={"resume": True})
        elif clean:
            transitions.end_runs(tx, now, [run_id], RunStatus.COMPLETED, "run_completed", None, output=output)
            state = AgentState.DONE
        else:
            agent = agent.model_copy(update={"failures": agent.failures + 1, "resume": True})
            retry_at = self._failed_attempt(tx, run, agent, how, message, now, retry)
            agent = agent.model_copy(update={"start_after": retry_at})
            state = AgentState.DONE if agent.start_after is None else AgentState.QUEUED
        if limit is None and agent.pauses:
            agent = agent.model_copy(update={"pauses": 0})
        tx.save_agent(agent.model_copy(update={"state": state}))

    def _budget_pause(self, tx: Transaction, run: Run, agent: Agent, left: BudgetLeft, now: datetime) -> Agent:
        return transitions.pause_at_budget(tx, now, run, agent, left, self.config.activity_max)

    def _pause(
        self, tx: Transaction, run: Run, agent: Agent, limit: Limit, message: str | None, now: datetime
    ) -> Agent:
        """Pause the run at its account's usage limit: a durable timer until the limit resets (when the
        harness said; else a backoff that doubles, capped), the account's other queued sub-agents held
        until then too, and the attempt not counted against max_attempts."""
        backoff = min(self.config.usage_limit_backoff_s * 2**agent.pauses, self.config.usage_limit_max_backoff_s)
        until = (
            limit.resets_at
            if limit.resets_at is not None and limit.resets_at > now
            else now + timedelta(seconds=backoff)
        )
        reason = limit.describe()
        cap = self.config.activity_max
        wait = Wait(step=f"{PAUSE_STEP}{agent.attempt}", kind="sleep", until=until, created_at=now)
        transitions.open_wait(tx, run.run_id, wait)
        detail = {"reason": reason, "until": transitions.iso(until), "message": message}
        tx.append_journal(run.run_id, "paused", now, attempt=agent.attempt, detail=detail)
        agent = transitions.note(tx, agent, now, "pause", f"paused: {reason} until {transitions.iso(until)}", cap)
        transitions.hold_account(tx, now, agent.limit_account, until, reason)
        update = {"resume": True, "pauses": agent.pauses + 1, "paused_until": until, "paused_reason": reason}
        return agent.model_copy(update=update)

    async def resume_paused(self, run_id: str) -> Run:
        """End a run's pause at a usage limit now (a person says the limit is over): it and every
        sub-agent its account held start again."""

        def resume(tx: Transaction) -> Run:
            now = self.context.now()
            agent = tx.get_agent(run_id)
            run = transitions.get_run(tx, run_id, payloads=False)
            pauses = [wait for wait in tx.list_waits(run_id) if wait.step.startswith(PAUSE_STEP)]
            if agent is None or not pauses:
                raise InvalidInput(
                    f"run {run_id} is not paused at a usage limit (it is {run.status}); nothing to resume",
                    run_id=run_id,
                )
            for wait in pauses:
                done = {"status": "done", "wake_at": transitions.iso(now), "resumed_early": True}
                transitions.end_wait(tx, now, run_id, wait.step, done, "woke", {"resumed_early": True})
            transitions.release_account(tx, now, agent.limit_account)
            return transitions.get_run(tx, run_id)

        return await self.store.write(resume)

    def _failed_attempt(
        self, tx: Transaction, run: Run, agent: Agent, how: ExitHow, message: str | None, now: datetime, retry: bool
    ) -> datetime | None:
        """Fail the run when this was the last attempt or another cannot help (None); else queue a
        retry, returning when."""
        error = {"type": how, "exit_code": agent.exit_code, "attempt": agent.attempt, "message": message or how}
        if retry and agent.failures < agent.max_attempts:
            retry_at = now + timedelta(seconds=run.retry.backoff_s(agent.failures))
            detail = {"error": error, "retry_at": retry_at.isoformat()}
            tx.append_journal(run.run_id, "attempt_failed", now, attempt=agent.attempt, detail=detail)
            if run.status == RunStatus.RUNNING:
                tx.set_runs_status([run.run_id], RunStatus.QUEUED)
            return retry_at
        why = (
            f"failure {agent.failures} of {agent.max_attempts} allowed" if retry else "not retried: it would fail again"
        )
        error["message"] = f"{error['message']} ({why})"
        transitions.end_runs(tx, now, [run.run_id], RunStatus.FAILED, "run_failed", {"error": error}, error=error)
        return None

    @staticmethod
    def _waited_during(tx: Transaction, agent: Agent) -> bool:
        """Whether the attempt opened a wait (that has since ended) the agent may not have seen end: not
        an approval already answered to it (its permission call returned the decision)."""
        began = agent.started_at or agent.launched_at
        return any(
            step.kind != "checkpoint" and began and step.started_at >= began and not _answered(step)
            for step in tx.list_steps(agent.run_id)
        )

    @staticmethod
    def _run(tx: Transaction, run_id: str) -> Run:
        run = tx.get_run(run_id, payloads=False)
        if run is None:
            raise OrchestratorError(f"run {run_id} is gone")
        return run


def _answered(step: Step) -> bool:
    """An approval whose decision its permission call already returned to the agent."""
    return step.kind == "approval" and isinstance(step.output, dict) and step.output.get("answered_at") is not None


def _decided(output: Any) -> str:
    """The resume note for a permission request decided while the agent had no process."""
    output = output if isinstance(output, dict) else {}
    request = output.get("request") if isinstance(output.get("request"), dict) else {}
    decision = output.get("decision") if isinstance(output.get("decision"), dict) else {}
    tool = request.get("tool_name", "a tool")
    said = f' ("{decision["message"]}")' if decision.get("message") else ""
    if output.get("status") == "allowed":
        return f"Your request to use {tool} was allowed{said}: make the same call again; it is answered at once."
    why = "it expired undecided" if output.get("status") == "expired" else f"it was denied{said}"
    return f"Your request to use {tool} was not allowed ({why}): do not retry it; finish the task another way."


_NO_PROCESS: dict[str, Any] = {
    "pid": None,
    "pgid": None,
    "host": None,
    "started_at": None,
    "heartbeat_at": None,
    "attempt_deadline": None,
    "exited_at": None,
    "exit_code": None,
}


def _raised(tx: Transaction, agent: Agent) -> bool:
    """Whether the agent's last process stopped at its budget, raised since."""
    raised = [step for step in tx.list_steps(agent.run_id, kind="budget") if step.ended_at is not None]
    return bool(raised) and agent.exited_at is not None and raised[-1].started_at >= agent.exited_at


def _messages_note(messages: list[Message]) -> str:
    """The messages queued for an agent, as its prompt tells them."""
    if not messages:
        return ""
    lines = [f"- ({m.source}, {transitions.iso(m.queued_at)}) {m.text}" for m in messages]
    told = "Messages sent to you (take them into account):\n" + "\n".join(lines)
    return told.replace(NUL, "\\x00").encode("utf-8", "backslashreplace").decode()
