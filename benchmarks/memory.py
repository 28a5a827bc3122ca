"""Memory of the processes mcp-orchestrator leaves running: a stdio server (one per Claude Code session and per
sub-agent) and a sub-agent's runner (one per live sub-agent), each beside a baseline measured in the same run.

    .venv/bin/python benchmarks/memory.py [--checkpoints 200] [--agent-s 3]
    PYTHONPATH=OTHER_CHECKOUT .venv/bin/python benchmarks/memory.py     # another checkout (an older commit, say)

Every process imports mcp_orchestrator from PYTHONPATH when it is set (an absolute path), else from where this
environment installed it.

1. ``mcp-orchestrator serve`` over stdio, driven by the SDK's client: its RSS and USS (the memory only it
   holds) after initialize and tools/list, then after ``--checkpoints`` checkpoints of one run; beside a bare
   server on the same SDK with one tool, after the same handshake and as many calls.
2. A sub-agent's runner: a real supervisor (``mcp-orchestrator supervise``) on a fresh store starts an agent
   (``sleep``) through its runner, as for any spawn, then ``--agent-s`` seconds later a second one; each
   runner's RSS and USS are read while its agent runs, ``--agent-s`` seconds after it started (a heartbeat or
   two in). Beside them, ``python -c`` sleeping: the interpreter alone. A runner forked from the supervisor's
   launcher shares the pages the launcher had at the fork until either writes them: its USS is what it costs,
   its RSS what ``ps`` shows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from mcp import Client, StdioServerParameters
from measure import BARE_SERVER, child_env

from mcp_orchestrator.models import SpawnSubagentInput, StatusInput
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.services.subagents import LEASE
from mcp_orchestrator.store.sqlite import SQLiteStore


def memory(pid: int) -> tuple[float, float]:
    """RSS and USS of a process, MiB."""
    info = psutil.Process(pid).memory_full_info()
    return info.rss / 2**20, info.uss / 2**20


def line(label: str, figures: tuple[float, float], baseline: tuple[float, float] | None = None) -> None:
    over = "" if baseline is None else f"   {figures[0] - baseline[0]:+6.1f} MiB RSS over the baseline"
    print(f"  {label:<44} RSS {figures[0]:6.1f} MiB   USS {figures[1]:6.1f} MiB{over}")


async def server_memory(
    argv: list[str], env: dict[str, str], calls: int, checkpoint: bool
) -> list[tuple[float, float]]:
    """The server's memory after the handshake and tools/list, then after ``calls`` calls."""
    async with Client(StdioServerParameters(command=argv[0], args=argv[1:], env=env)) as client:
        await client.list_tools()
        (server,) = psutil.Process().children()  # the client's one process
        figures = [memory(server.pid)]
        if checkpoint:
            started = await client.call_tool("start_run", {"name": "memory-benchmark"})
            run_id = started.structured_content["run"]["run_id"]
            for i in range(calls):
                await client.call_tool("checkpoint", {"run_id": run_id, "step": f"s{i}", "output": {"i": i}})
        else:
            for i in range(calls):
                await client.call_tool("noop", {"run_id": "r", "step": f"s{i}"})
        figures.append(memory(server.pid))
        return figures


async def runner_memory(root: Path, env: dict[str, str], agent_s: float) -> list[tuple[float, float]]:
    """The memory of two runners while their agents run, started by a real supervisor one after the other
    (the first may start the launcher that forks the next)."""
    db = root / "runner.db"
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "mcp_orchestrator", "supervise", "--db", str(db)], env=env, stderr=subprocess.DEVNULL
    )
    try:
        async with SQLiteStore(db) as store:
            engine = Engine(store, workspace=str(root))
            while await engine.store.read(lambda tx: tx.get_lease(LEASE)) is None:
                await asyncio.sleep(0.05)
            work = ["sleep", f"{agent_s + 30:g}"]
            pids = []
            for name in ("first", "second"):
                spawned = await engine.subagents.spawn(SpawnSubagentInput(prompt=name, agent="command", command=work))
                while (
                    process := (await engine.runs.status(StatusInput(run_id=spawned.run.run_id))).process
                ) is None or (process.started_at is None or process.pid is None):
                    await asyncio.sleep(0.02)
                pids.append(process.pid)
                await asyncio.sleep(agent_s)
            return [memory(pid) for pid in pids]
    finally:
        supervisor.terminate()
        supervisor.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=int, default=200, help="calls before the second reading")
    parser.add_argument("--agent-s", type=float, default=3.0, help="seconds the agent has run at the reading")
    args = parser.parse_args()
    import mcp_orchestrator

    print(f"memory (mcp_orchestrator from {Path(mcp_orchestrator.__file__).parent})\n")
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        os.chdir(root)  # `python -m` imports from the current directory first: from no checkout here
        env = child_env(XDG_STATE_HOME=str(root / "state"), XDG_CONFIG_HOME=str(root / "config"))
        serve_env = {**env, "MCP_ORCHESTRATOR_DB": str(root / "serve.db")}

        print("stdio server")
        bare = asyncio.run(server_memory([sys.executable, str(BARE_SERVER)], env, args.checkpoints, False))
        serve = asyncio.run(
            server_memory([sys.executable, "-m", "mcp_orchestrator", "serve"], serve_env, args.checkpoints, True)
        )
        line("bare SDK server, after tools/list (baseline)", bare[0])
        line("mcp-orchestrator serve, after tools/list", serve[0], bare[0])
        line(f"bare SDK server, after {args.checkpoints} calls", bare[1])
        line(f"mcp-orchestrator serve, after {args.checkpoints} checkpoints", serve[1], bare[1])

        print("\nsub-agent runner")
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
        try:
            time.sleep(0.5)
            baseline = memory(sleeper.pid)
        finally:
            sleeper.kill()
            sleeper.wait()
        first, second = asyncio.run(runner_memory(root, env, args.agent_s))
        line("python -c 'time.sleep' (baseline)", baseline)
        line("runner of a first sub-agent", first, baseline)
        line(f"runner of a second one, {args.agent_s:g} s later", second, baseline)


if __name__ == "__main__":
    main()
