"""What a server's background duties cost while an agent checkpoints, against the same checkpoints without them.

    python benchmarks/wakeups.py [--n 2000] [--db postgresql://USER@HOST/DATABASE]

One process, one store (a temporary SQLite file by default; with ``--db``, a schema of its own in that
database, dropped after), one run checkpointed ``--n`` times one after
another, twice: first with no background duty running (the baseline), then with the supervisor and the
timers running as in every server. Printed for each: CPU time of the process (its threads included) per
1,000 checkpoints, the supervisor's ticks per 1,000 checkpoints, and checkpoints per second. A checkpoint
that ends no run and starts nothing cannot concern the supervisor: ideally it ticks no more often with an
agent checkpointing than without.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

from postgres_checkpoint import fresh_schema

from mcp_orchestrator.config import Settings
from mcp_orchestrator.models import CheckpointInput, StartRunInput
from mcp_orchestrator.runtime import Engine, open_engine
from mcp_orchestrator.supervisor import Supervisor, run_timers

PAYLOAD = "x" * 500


class CountedSupervisor(Supervisor):
    ticks = 0

    async def tick(self, *, store_wide: bool = True, node: bool = True):  # type: ignore[no-untyped-def]
        CountedSupervisor.ticks += 1
        return await super().tick(store_wide=store_wide, node=node)


async def checkpoints(engine: Engine, n: int, label: str) -> tuple[float, float]:
    """CPU seconds and wall seconds for ``n`` checkpoints on a new run."""
    run_id = (await engine.runs.start_run(StartRunInput(name=label))).run.run_id
    await asyncio.sleep(0.5)  # let duties that woke for the start settle
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step=f"s{i}", output=PAYLOAD))
    return time.process_time() - cpu, time.perf_counter() - wall


async def main(n: int, db: str | None) -> None:
    async with contextlib.AsyncExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        location = await stack.enter_async_context(fresh_schema(db)) if db else str(Path(tmp) / "store.db")
        settings = Settings.load(db=location, config=None)
        async with open_engine(settings) as engine:
            await checkpoints(engine, min(n, 200), "warm-up")
            quiet_cpu, quiet_wall = await checkpoints(engine, n, "no duties")
            supervisor = CountedSupervisor(engine, settings)
            duties = [asyncio.create_task(supervisor.run()), asyncio.create_task(run_timers(engine))]
            await asyncio.sleep(0.5)  # the leases taken, the first ticks done
            before = CountedSupervisor.ticks
            busy_cpu, busy_wall = await checkpoints(engine, n, "with duties")
            ticks = CountedSupervisor.ticks - before
            for duty in duties:
                duty.cancel()
            await asyncio.gather(*duties, return_exceptions=True)
    per = 1000 / n

    def line(label: str, cpu: float, wall: float) -> str:
        return f"  {label:<36}{cpu * per * 1000:>8.0f} ms CPU / 1,000   {n / wall:>7,.0f}/s"

    print(f"{n} checkpoints of {len(PAYLOAD)} bytes on {'PostgreSQL' if db else 'SQLite'}, one after another")
    print(line("no background duty (baseline)", quiet_cpu, quiet_wall))
    print(line("supervisor and timers running", busy_cpu, busy_wall) + f"   {ticks * per:.0f} supervisor ticks / 1,000")
    share = (busy_cpu - quiet_cpu) * per * 1000
    ratio = busy_cpu / quiet_cpu
    print(f"  the duties' share: {share:.0f} ms CPU per 1,000 checkpoints ({ratio:.2f}x the baseline's CPU)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="checkpoints per measurement")
    parser.add_argument(
        "--db", help="postgresql:// URL of a database to make a schema in (default: a temporary SQLite file)"
    )
    options = parser.parse_args()
    asyncio.run(main(options.n, options.db))
