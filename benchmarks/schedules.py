"""Schedule firing: lateness of 1,000 schedules due within a minute, and the supervisor's CPU.

    python benchmarks/schedules.py [--schedules 1000] [--window-s 60]

A real supervisor process (``mcp-orchestrator supervise``) holds the lease on a fresh store; this
process creates one-shot schedules (send_event actions) due at even intervals across the window,
waits until all have fired, and reads each firing's lateness (fired_at - due_at) from the store.

Baseline, measured in the same run: the lateness of a plain asyncio timer in this process (what
any sleeping scheduler pays before doing anything). Targets: p99 lateness under 1 s; the
supervisor's CPU while idle under 1% of a core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from measure import cpu_seconds, percentile

from mcp_orchestrator.models import ListSchedulesInput, ScheduleInput, SendEventAction, utcnow
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.services.subagents import LEASE
from mcp_orchestrator.store.sqlite import SQLiteStore


async def timer_lateness(n: int) -> list[float]:
    late = []
    for _ in range(n):
        due = time.monotonic() + 0.01
        await asyncio.sleep(due - time.monotonic())
        late.append(time.monotonic() - due)
    return late


def line(label: str, samples: list[float]) -> str:
    p50, p99 = statistics.median(samples) * 1000, percentile(samples, 0.99) * 1000
    return f"  {label:<40}p50 {p50:8.2f} ms  p99 {p99:8.2f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--window-s", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        db = Path(directory) / "bench.db"
        env = {**os.environ, "XDG_STATE_HOME": str(Path(directory) / "state")}
        env.pop("MCP_ORCHESTRATOR_RUN_ID", None)
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "mcp_orchestrator", "supervise", "--db", str(db)], env=env, stderr=subprocess.DEVNULL
        )
        try:
            async with SQLiteStore(db) as store:
                engine = Engine(store, workspace=directory)
                while await engine.store.read(lambda tx: tx.get_lease(LEASE)) is None:
                    await asyncio.sleep(0.05)
                baseline = await timer_lateness(200)
                await asyncio.sleep(2)
                idle_before, idle_at = cpu_seconds(supervisor.pid), time.monotonic()
                await asyncio.sleep(10)
                idle_cpu = (cpu_seconds(supervisor.pid) - idle_before) / (time.monotonic() - idle_at)

                start = utcnow() + timedelta(seconds=5 + args.schedules / 200)  # after they are all created
                spacing = args.window_s / args.schedules
                action = SendEventAction(type="send_event", name="bench.tick")
                for i in range(args.schedules):
                    at = start + timedelta(seconds=i * spacing)
                    await engine.schedules.schedule(ScheduleInput(name=f"s{i:05d}", at=at, action=action))
                busy_before, busy_at = cpu_seconds(supervisor.pid), time.monotonic()
                while any(s.next_due for s in (await engine.schedules.list(ListSchedulesInput())).schedules):
                    await asyncio.sleep(0.5)
                busy_cpu = (cpu_seconds(supervisor.pid) - busy_before) / (time.monotonic() - busy_at)
                firings = [f for s in (await engine.schedules.list(ListSchedulesInput())).schedules if (f := s.last)]
        finally:
            supervisor.terminate()
            supervisor.wait(timeout=10)
    lateness = [(firing.fired_at - firing.due_at).total_seconds() for firing in firings]
    print(f"schedule firing: {len(firings)} of {args.schedules} one-shot schedules over {args.window_s:g} s\n")
    print(line("baseline: an asyncio timer's lateness", baseline))
    print(line("firing lateness (fired_at - due_at)", lateness) + "   (target p99 < 1 s)")
    print(f"  {'p99 against the baseline':<40}{percentile(lateness, 0.99) / percentile(baseline, 0.99):8.1f}x")
    print(f"  {'supervisor CPU, idle':<40}{idle_cpu * 100:8.2f} % of one core   (target < 1 %)")
    print(f"  {'supervisor CPU, while firing':<40}{busy_cpu * 100:8.2f} % of one core")


if __name__ == "__main__":
    asyncio.run(main())
