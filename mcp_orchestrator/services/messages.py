"""Messages to sub-agents: queued durably, delivered to the running agent (where its harness takes live
input), in its next resume prompt, or when it reads its inbox; dropped, journaled, if its run ends first."""

from __future__ import annotations

from .. import transitions
from ..errors import InvalidInput, NotAllowed
from ..ids import new_id
from ..models import (
    AgentState,
    Message,
    ReadMessagesInput,
    ReadMessagesResult,
    SendMessageInput,
    SendMessageResult,
)
from ..profiles import AgentsConfig
from ..store.base import Transaction
from .context import Context
from .sizing import first_fitting

INBOX_MAX = 100  # messages one read_messages call delivers


class Messages:
    """Queueing messages for sub-agents and reading their inboxes (see the module docstring)."""

    def __init__(self, context: Context, config: AgentsConfig) -> None:
        self.context = context
        self.store = context.store
        self.config = config

    async def send(self, args: SendMessageInput, source: str) -> SendMessageResult:
        """Queue a message for a sub-agent's run; refused for a run that is not a sub-agent or has ended."""
        self.context.check_payload("text", args.text)

        def send(tx: Transaction) -> SendMessageResult:
            now = self.context.now()
            run = transitions.get_run(tx, args.run_id, payloads=False)
            transitions.check_below(tx, run.run_id, self.context.subagent_run_id, "sends messages to")
            agent = tx.get_agent(run.run_id)
            if agent is None:
                raise InvalidInput(
                    f"run {run.run_id} is not a sub-agent: messages go to sub-agents (runs spawn_subagent started)",
                    run_id=run.run_id,
                )
            if run.status.terminal:
                raise InvalidInput(
                    f"run {run.run_id} has ended ({run.status}): nobody would read the message; retry_run it first",
                    run_id=run.run_id,
                )
            message = Message(
                message_id=new_id(), run_id=run.run_id, text=args.text, source=source, status="queued", queued_at=now
            )
            tx.insert_message(message)
            tx.append_journal(run.run_id, "message_queued", now, detail={"message_id": message.message_id})
            tx.save_agent(transitions.note(tx, agent, now, "message", f"message queued: {args.text}", self._cap))
            profile = self.config.profiles.get(agent.profile)
            live = profile is not None and profile.input != "text"
            if agent.state == AgentState.LIVE and live:
                delivery = "within seconds: it is written to the running agent"
            elif agent.state == AgentState.LIVE:
                delivery = (
                    "when the agent reads its inbox (read_messages), else in its prompt when it next resumes: "
                    f"its harness ({agent.profile}) takes no input while it runs"
                )
            else:
                delivery = "in its prompt when its process starts (or resumes) next"
            return SendMessageResult(message=message, delivery=delivery)

        return await self.store.write(send)

    async def read(self, args: ReadMessagesInput) -> ReadMessagesResult:
        """The sub-agent's queued messages, oldest first, now delivered to its current attempt."""

        def read(tx: Transaction) -> ReadMessagesResult:
            now = self.context.now()
            run = transitions.get_run(tx, args.run_id, payloads=False)
            own = self.context.subagent_run_id
            if own is not None and run.run_id != own:
                raise NotAllowed(
                    f"run {run.run_id} is not this sub-agent's run ({own}): an agent reads only its own messages",
                    run_id=run.run_id,
                )
            agent = tx.get_agent(run.run_id)
            if agent is None:
                return ReadMessagesResult(messages=[])
            queued = first_fitting(tx.messages_of([run.run_id], ["queued"], INBOX_MAX), self.context.max_result_bytes)
            agent, delivered = transitions.deliver_messages(tx, now, agent, queued, "inbox", self._cap)
            if delivered:
                tx.save_agent(agent)
            return ReadMessagesResult(messages=delivered)

        return await self.store.write(read)

    async def queued(self, run_id: str) -> list[Message]:
        return await self.store.read(lambda tx: tx.messages_of([run_id], ["queued"], INBOX_MAX))

    @property
    def _cap(self) -> int:
        return self.config.activity_max
