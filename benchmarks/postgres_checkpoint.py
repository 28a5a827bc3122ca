"""The PostgreSQL half of ``checkpoint.py`` (see its docstring): run it through that script."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from checkpoint import CONCURRENCY, PAYLOAD, Figures, engine_figures, stdio_figures, timed

from mcp_orchestrator.ids import new_id
from mcp_orchestrator.models import CheckpointInput, StartRunInput
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.store.postgres import PostgresStore
from mcp_orchestrator.store.postgres_schema import MIGRATIONS

HERE = Path(__file__).parent


@asynccontextmanager
async def fresh_schema(database: str) -> AsyncIterator[str]:
    """A new schema in the database for one measurement; the URL that selects it. Dropped after."""
    schema = f"bench_{new_id().lower()}"
    conn = await asyncpg.connect(database)
    await conn.execute(f"CREATE SCHEMA {schema}")
    try:
        separator = "&" if "?" in database else "?"
        yield f"{database}{separator}search_path={schema}"
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def raw_checkpoint(conn: asyncpg.Connection, run: str, step: str) -> None:
    """The rows a checkpoint writes (its step and its journal entry) by raw asyncpg, in one transaction."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO steps (run_id, step, kind, status, attempt, output, started_at, ended_at) "
            "VALUES ($1, $2, 'checkpoint', 'completed', 1, $3, now(), now())",
            run,
            step,
            json.dumps(PAYLOAD),
        )
        await conn.execute(
            "INSERT INTO journal (run_id, at, kind, step, attempt) VALUES ($1, now(), 'step_completed', $2, 1)",
            run,
            step,
        )


async def write_for(
    seconds: float, start_at: float, runs: list[str], write: Callable[[str, int], Awaitable[object]]
) -> tuple[int, float]:
    """``write(run, number)`` on every run at once, from ``start_at`` (the same instant in every node)
    for ``seconds``; how many were written, and the CPU seconds this process spent meanwhile."""
    await asyncio.sleep(max(0.0, start_at - time.time()))
    done = 0
    cpu = time.process_time()
    deadline = time.monotonic() + seconds

    async def lane(run: str) -> None:
        nonlocal done
        number = 0
        while time.monotonic() < deadline:
            number += 1
            await write(run, number)
            done += 1

    await asyncio.gather(*(lane(run) for run in runs))
    return done, time.process_time() - cpu


async def raw_writer(url: str, seconds: float, lanes: int, start_at: float) -> tuple[int, float]:
    """A checkpoint's rows by raw asyncpg on ``lanes`` connections."""
    async with asyncpg.create_pool(url, min_size=lanes, max_size=lanes) as pool:
        runs = [f"raw-{new_id()}" for _ in range(lanes)]
        await pool.executemany(
            "INSERT INTO runs (run_id, name, status, retry, created_at) VALUES ($1, 'n', 'running', '{}', now())",
            [(run,) for run in runs],
        )

        async def write(run: str, number: int) -> None:
            async with pool.acquire() as conn:
                await raw_checkpoint(conn, run, f"s{number}")

        return await write_for(seconds, start_at, runs, write)


async def engine_writer(url: str, seconds: float, lanes: int, start_at: float) -> tuple[int, float]:
    """Engine checkpoints on ``lanes`` runs of their own."""
    async with PostgresStore(url, pool_size=lanes) as store:
        engine = Engine(store)
        runs = [(await engine.runs.start_run(StartRunInput(name="bench"))).run.run_id for _ in range(lanes)]

        async def write(run: str, number: int) -> None:
            await engine.runs.checkpoint(CheckpointInput(run_id=run, step=f"s{number}", output=PAYLOAD))

        return await write_for(seconds, start_at, runs, write)


async def raw_figures(url: str, n: int) -> tuple[Figures, Figures]:
    conn = await asyncpg.connect(url)
    for statement in MIGRATIONS[0]:
        await conn.execute(statement)
    await conn.execute(
        "INSERT INTO runs (run_id, name, status, retry, created_at) "
        "SELECT 'raw' || i, 'n', 'running', '{}', now() FROM generate_series(0, $1) i",
        CONCURRENCY,
    )
    pool = await asyncpg.create_pool(url, min_size=CONCURRENCY, max_size=CONCURRENCY)

    def call(run: str, step: str) -> Callable[[], Awaitable[object]]:
        async def write() -> None:
            async with pool.acquire() as conn:
                await raw_checkpoint(conn, run, step)

        return write

    sequential = await timed("raw asyncpg, a checkpoint's rows", [call("raw0", f"s{i}") for i in range(n)])
    calls = [
        call(f"raw{lane + 1}", f"s{i}") for i in range(max(1, 2 * n // CONCURRENCY)) for lane in range(CONCURRENCY)
    ]
    concurrent = await timed(f"raw asyncpg, {CONCURRENCY} at once", calls, lanes=CONCURRENCY)
    await pool.close()
    await conn.close()
    return sequential, concurrent


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (Linux /proc/stat)."""
    fields = [float(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def node_processes(kind: str, url: str, nodes: int, seconds: float) -> tuple[int, float, float]:
    """``nodes`` processes writing at once for ``seconds``: the total they committed, the CPU seconds
    the nodes spent doing it, and the share of the whole machine's CPU that was busy meanwhile."""
    start_at = time.time() + 3.0  # after every process has started and connected
    command = [sys.executable, str(HERE / "checkpoint.py"), "--node-worker", kind, "--db", url]
    command += ["--seconds", str(seconds), "--start-at", str(start_at)]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(nodes)]
    time.sleep(max(0.0, start_at - time.time()) + 0.5)
    busy_before, total_before = machine_busy()
    time.sleep(max(0.1, seconds - 1.0))  # the middle of the window, away from its edges
    busy_after, total_after = machine_busy()
    reports = [worker.communicate()[0].split() for worker in workers]
    done = sum(int(report[-2]) for report in reports)
    cpu = sum(float(report[-1]) for report in reports)
    return done, cpu, (busy_after - busy_before) / (total_after - total_before)


async def postgres_main() -> None:
    parser = argparse.ArgumentParser(description="checkpoint benchmark on PostgreSQL")
    parser.add_argument("--db", required=True, help="postgresql:// URL of a database to create schemas in")
    parser.add_argument("--n", type=int, default=3000, help="checkpoints per latency measurement (default 3000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each nodes measurement (default 5)")
    parser.add_argument("--node-worker", choices=["engine", "raw"], help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node_worker:  # one node of a nodes measurement: the schema exists, print the count
        writer = engine_writer if args.node_worker == "engine" else raw_writer
        done, cpu = await writer(args.db, args.seconds, CONCURRENCY, args.start_at)
        print(done, cpu)
        return

    async with fresh_schema(args.db) as url:
        raw_sequential, raw_concurrent = await raw_figures(url, args.n)
    async with fresh_schema(args.db) as url:
        sequential, concurrent = await engine_figures(PostgresStore(url, pool_size=CONCURRENCY), args.n)
    async with fresh_schema(args.db) as url:
        with tempfile.TemporaryDirectory() as workdir:
            baseline, tool, _ = await stdio_figures(url, Path(workdir), max(500, args.n // 3))
    scaling = []
    for nodes in (1, 2, 3):
        async with fresh_schema(args.db) as url:
            conn = await asyncpg.connect(url)
            for statement in MIGRATIONS[0]:
                await conn.execute(statement)
            await conn.close()
            raw = await asyncio.to_thread(node_processes, "raw", url, nodes, args.seconds)
        async with fresh_schema(args.db) as url:
            async with PostgresStore(url):  # the schema, before the nodes start at once
                pass
            ours = await asyncio.to_thread(node_processes, "engine", url, nodes, args.seconds)
        scaling.append((nodes, ours, raw))

    print(f"mcp-orchestrator checkpoint benchmark on PostgreSQL: {args.n} checkpoints of {len(PAYLOAD)} bytes")
    for figures in (raw_sequential, raw_concurrent, sequential, concurrent, baseline, tool):
        print("  " + figures.row())
    print()
    print(f"  nodes writing at once ({CONCURRENCY} runs each, {args.seconds:g} s), total checkpoints per second:")
    one = scaling[0][1][0]
    cpus = os.cpu_count() or 1
    for nodes, (ours, our_cpu, our_busy), (raw, _, raw_busy) in scaling:
        # What the machine spent beyond the nodes' own CPU: the database, when it runs here.
        rest = max(0.0, our_busy * cpus * args.seconds - our_cpu)
        print(
            f"    {nodes} node{'s' if nodes > 1 else ' '}  engine {ours / args.seconds:>7,.0f}/s "
            f"({ours / one:.2f}x one node; CPU per checkpoint: node {our_cpu / ours * 1e6:3.0f} us, the rest of "
            f"the machine {rest / ours * 1e6:3.0f} us; {our_busy:.0%} busy)   raw asyncpg "
            f"{raw / args.seconds:>7,.0f}/s ({raw_busy:.0%} busy)"
        )
    print(f"    (the machine has {cpus} CPUs, shared by the nodes and the database when it is local)")
    print()
    print(f"  {'engine sequential / raw rows':<44}{sequential.rate / raw_sequential.rate:>6.2f}x")
    print(
        f"  {f'engine {CONCURRENCY} concurrent / raw rows {CONCURRENCY} at once':<44}"
        f"{concurrent.rate / raw_concurrent.rate:>6.2f}x"
    )
    print(f"  {'checkpoint tool / no-op tool (stdio)':<44}{tool.rate / baseline.rate:>6.2f}x")
