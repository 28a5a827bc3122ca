"""Sub-agent supervision: spawn-to-running latency, throughput through a limit, idle supervisor CPU.

    python benchmarks/subagents.py [--latency-n 40] [--agents 100] [--limit 8] [--work-s 5]

A real supervisor process (``mcp-orchestrator supervise``) holds the lease on a fresh store; this
process spawns sub-agents on the same store, as another session's server would. Each agent is a
real process (``sleep``) started by a real runner.

1. spawn-to-running: from the run's creation (queued) to its agent process started, one at a time;
2. N agents of ``--work-s`` seconds each through a limit of ``--limit``: wall time against the
   ideal, N x work / limit (the baseline: what a perfect scheduler with free process starts takes);
3. the supervisor's CPU while nothing is queued, against the same process's CPU while working.

The baseline of 1 is the time to start a bare process (``true``) from Python; of 2, the ideal.
Phase 2 also breaks a handover down, from the times the store records: the agent exits (its
start plus its work) -> its runner records the exit -> the supervisor claims the next queued
agent (claims paired with exits in order, past the first ``--limit``) -> the next agent's process
starts; and it prints the CPU that supervising took per agent (the supervisor, its runners and
whatever else it started).
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
from pathlib import Path

from measure import cpu_seconds, percentile

from mcp_orchestrator.models import Agent, AgentState, ListRunsInput, SpawnSubagentInput, StatusInput
from mcp_orchestrator.profiles import load_agents_config
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.services.subagents import LEASE
from mcp_orchestrator.store.sqlite import SQLiteStore


async def started_at(engine: Engine, run_id: str) -> tuple[float, float] | None:
    """(queued at, process started at) once the process started, as the journal records them."""
    result = await engine.runs.status(StatusInput(run_id=run_id, journal_limit=10, log_lines=0))
    starts = [entry.at for entry in result.journal if entry.kind == "process_started"]
    return (result.run.created_at.timestamp(), starts[0].timestamp()) if starts else None


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process, of the children it reaped and of its live children (with theirs), Linux /proc:
    what supervising costs, runners included, wherever they are reaped."""

    def stat(pid: int) -> list[str]:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

    total = 0.0
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for each in [pid, *map(int, children)]:
        try:
            fields = stat(each)
        except FileNotFoundError:  # it ended meanwhile (and was reaped into the parent's figures)
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def handover_phases(agents: list[Agent], work_s: float, limit: int) -> dict[str, list[float]]:
    """Seconds spent in each phase of a handover, from the store's records of done agents."""
    exits = sorted(a.exited_at.timestamp() for a in agents if a.exited_at)
    claims = sorted(a.launched_at.timestamp() for a in agents if a.launched_at)
    return {
        "runner records the exit": [
            (a.exited_at - a.started_at).total_seconds() - work_s for a in agents if a.exited_at and a.started_at
        ],
        "supervisor claims the next": [claim - exit for exit, claim in zip(exits, claims[limit:], strict=False)],
        "the next agent starts": [
            (a.started_at - a.launched_at).total_seconds() for a in agents if a.started_at and a.launched_at
        ],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-n", type=int, default=40, help="spawns for the latency measurement")
    parser.add_argument("--agents", type=int, default=100, help="agents through the limit")
    parser.add_argument("--limit", type=int, default=8, help="max_concurrent")
    parser.add_argument("--work-s", type=float, default=5.0, help="each agent's work, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        db, config = root / "bench.db", root / "config.toml"
        config.write_text(f"[limits]\nmax_concurrent = {args.limit}\n")
        env = {**os.environ, "XDG_STATE_HOME": str(root / "state"), "MCP_ORCHESTRATOR_CONFIG": str(config)}
        env.pop("MCP_ORCHESTRATOR_RUN_ID", None)
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "mcp_orchestrator", "supervise", "--db", str(db)], env=env, stderr=subprocess.DEVNULL
        )
        try:
            async with SQLiteStore(db) as store:
                engine = Engine(store, workspace=directory, agents=load_agents_config(config))
                spawn = engine.subagents.spawn
                while await engine.store.read(lambda tx: tx.get_lease(LEASE)) is None:
                    await asyncio.sleep(0.05)
                print(f"sub-agents, supervisor pid {supervisor.pid}, limit {args.limit}\n")

                latencies = []
                for i in range(args.latency_n):
                    run_id = (
                        await spawn(SpawnSubagentInput(prompt=f"l{i}", agent="command", command=["true"]))
                    ).run.run_id
                    while (times := await started_at(engine, run_id)) is None:
                        await asyncio.sleep(0.005)
                    latencies.append(times[1] - times[0])
                baseline = []  # starting a process at all: Popen returns once the child has exec'd
                for _ in range(args.latency_n):
                    began = time.perf_counter()
                    subprocess.Popen(["true"]).wait()
                    baseline.append(time.perf_counter() - began)
                base = statistics.median(baseline) * 1000
                print(f"  baseline: start and reap a process   p50 {base:7.1f} ms")
                p50, p99 = statistics.median(latencies) * 1000, percentile(latencies, 0.99) * 1000
                print(
                    f"  spawn-to-running{'':21}p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  (target p50 < 100 ms; "
                    f"{p50 / base:.0f}x the baseline)"
                )

                await asyncio.sleep(1)
                idle_before, idle_at = cpu_seconds(supervisor.pid), time.monotonic()
                await asyncio.sleep(5)
                idle_cpu = (cpu_seconds(supervisor.pid) - idle_before) / (time.monotonic() - idle_at)

                work = ["sleep", f"{args.work_s:g}"]
                tree_before = tree_cpu_seconds(supervisor.pid)
                busy_before, began = cpu_seconds(supervisor.pid), time.monotonic()
                ids = [
                    (await spawn(SpawnSubagentInput(prompt=f"w{i}", agent="command", command=work))).run.run_id
                    for i in range(args.agents)
                ]
                live = ListRunsInput(status=["queued", "running", "waiting"], limit=1)
                while (await engine.runs.list_runs(live)).runs:
                    await asyncio.sleep(0.05)
                wall = time.monotonic() - began
                busy_cpu = (cpu_seconds(supervisor.pid) - busy_before) / wall
                ideal = args.agents * args.work_s / args.limit
                completed = ListRunsInput(status="completed", limit=200)
                failed = set(ids) - {run.run_id for run in (await engine.runs.list_runs(completed)).runs}
                print(
                    f"  {args.agents} agents x {args.work_s:g} s, limit {args.limit}        "
                    f"{wall:6.1f} s against the ideal {ideal:.1f} s: {wall / ideal:.3f}x (target within 1.10x)"
                    + (f", {len(failed)} failed" if failed else "")
                )
                print(f"  supervisor CPU, idle                 {idle_cpu * 100:6.2f} % of one core")
                print(f"  supervisor CPU, supervising          {busy_cpu * 100:6.2f} % of one core")
                done = await engine.store.read(lambda tx: tx.agents_in([AgentState.DONE]))
                wanted = set(ids)
                ours = [agent for agent in done if agent.run_id in wanted]
                print(f"  a handover, by phase (ms)            p50 / p90 / max, over {args.agents} agents")
                medians = 0.0
                for phase, samples in handover_phases(ours, args.work_s, args.limit).items():
                    if samples:
                        medians += statistics.median(samples)
                        print(
                            f"    {phase:<33}{statistics.median(samples) * 1000:7.1f} / "
                            f"{percentile(samples, 0.9) * 1000:7.1f} / {max(samples) * 1000:7.1f}"
                        )
                print(f"    sum of the medians{'':15}{medians * 1000:7.1f}")
                await asyncio.sleep(1)  # the last runners close their store and end
                per_agent = (tree_cpu_seconds(supervisor.pid) - tree_before) / args.agents
                print(f"  CPU per agent, supervisor and runner {per_agent * 1000:6.0f} ms")
        finally:
            supervisor.terminate()
            supervisor.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
