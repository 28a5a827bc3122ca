"""Event tools: send events, wait for them durably, and sleep."""

from __future__ import annotations

from ..models import (
    SendEventInput,
    SendEventResult,
    SleepInput,
    SleepResult,
    WaitForEventInput,
    WaitResult,
)
from ..runtime import Engine
from ..services.events import Progress
from ._base import SAFE_WRITE, engine_tool


@engine_tool(
    SendEventInput,
    SendEventResult,
    title="Send an event",
    annotations=SAFE_WRITE,
)
async def send_event(engine: Engine, args: SendEventInput) -> SendEventResult:
    """Send an event that waiting runs may be waiting for (an approval, a result, a reply).

    Use it to wake a run that called wait_for_event for this name, in this or any other session,
    or to leave a message for a run that will wait for it later. Give an `id` when the same event
    might be sent twice (a retried delivery): it is then stored once.

    Returns `event_id`, `deduplicated` and `woken_run_ids` (runs whose waits it satisfied now).

    Example: send_event(name="approval", data={"pr": 42, "approved": true}) -> {"event_id": "01J...",
    "deduplicated": false, "woken_run_ids": ["01K..."]}
    """
    return await engine.events.send_event(args, source="tool")


@engine_tool(
    WaitForEventInput,
    WaitResult,
    title="Wait for an event",
    annotations=SAFE_WRITE,
    blocking=True,
)
async def wait_for_event(engine: Engine, args: WaitForEventInput, progress: Progress) -> WaitResult:
    """Wait durably, as a step of a run, for an event (a person's approval, CI, another agent).

    The wait is recorded at once and survives this session: the earliest matching event that
    arrived after the run started (even before this call) satisfies it. The call blocks at most
    `block_s` seconds, then returns status="waiting"; call again with the same run_id and step to
    keep waiting (or end the session: the wait stays, and `timeout_s` is enforced without you).
    Once received or timed out, the result is memoized: asking again returns the same event.
    A client that takes MCP tasks gets a task at once instead, ending with this answer.

    Returns `status` (received, waiting or timed_out), the `event` when received, `timeout_at`.

    Example: wait_for_event(run_id="01J...", step="await-review", event="review.done",
    match={"data.pr": 42}, timeout_s=86400) -> {"status": "waiting", "timeout_at": "..."}; later the
    same call -> {"status": "received", "event": {"name": "review.done", "data": {"pr": 42, ...}}}
    """
    return await engine.events.wait_for_event(args, progress)


@engine_tool(
    SleepInput,
    SleepResult,
    title="Sleep durably",
    annotations=SAFE_WRITE,
    blocking=True,
)
async def sleep(engine: Engine, args: SleepInput, progress: Progress) -> SleepResult:
    """A durable timer step: wait until a time (or for some seconds from the first call).

    Use it to check back on something later ("in ten minutes, look at the deploy"). The wake time
    is fixed by the first call and survives the session; the call blocks at most `block_s`, then
    returns status="sleeping"; call again with the same run_id and step until it says "done".
    A client that takes MCP tasks gets a task at once instead, ending with this answer.

    Example: sleep(run_id="01J...", step="wait-for-deploy", seconds=600, block_s=0) ->
    {"status": "sleeping", "wake_at": "2026-11-24T10:10:00Z"}
    """
    return await engine.events.sleep(args, progress)
