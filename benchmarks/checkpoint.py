"""Checkpoint throughput and latency, each against a baseline measured in the same run.

    python benchmarks/checkpoint.py [--n 3000] [--dir DIR] [--only engine|stdio] [--rounds N] [--profile DIR]
    python benchmarks/checkpoint.py --db postgresql://USER@HOST/DATABASE [--n 3000] [--seconds 5]

On SQLite (the default, in a temporary directory):

1. raw sqlite3: one ~500-byte row per commit, WAL, synchronous=FULL (the durability floor), and,
   for reference, the rows a checkpoint really writes (its step and its journal entry, on the
   store's own schema) per commit, alone and 16 at a time: the I/O part of a checkpoint, and of
   a group commit, without any of our code;
2. engine, sequential: one run, N checkpoints one after another;
3. engine, 16 concurrent runs (group commit); beside both engine lines, the CPU time a checkpoint cost the
   process (its event loop and its connection threads), which the disk's fsync time does not move;
4. the checkpoint tool over stdio from the MCP SDK client, sequential;
5. a no-op tool with the same arguments and result type on the same SDK over stdio (the protocol's own
   cost), both servers running at once and called in alternating blocks of 50, so that both lines meet
   the same load.

``--rounds N`` measures the two stdio lines N times, one after the other, and prints each round's ratio
(a shared machine's load moves them). ``--profile DIR`` runs both stdio servers under cProfile, keeps
their profiles in DIR (noop.prof, checkpoint.prof) and prints their top lines; that run's timings are
the profiler's. The servers import the project as the benchmark does (``PYTHONPATH`` is passed on), so
an older copy of the code can be measured by pointing ``PYTHONPATH`` at it.

On PostgreSQL (``--db``; each measurement in a schema of its own, dropped after): the same engine
and stdio lines, against raw asyncpg writing a checkpoint's rows, one transaction each, alone and
16 at once; then 1, 2 and 3 nodes (separate processes, 16 concurrent runs each) checkpointing at
once for ``--seconds``, total throughput, against raw asyncpg with the same number of processes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from mcp import Client, StdioServerParameters

from mcp_orchestrator.models import CheckpointInput, StartRunInput
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.store import Store
from mcp_orchestrator.store.sqlite import SQLiteStore
from mcp_orchestrator.store.sqlite_schema import MIGRATIONS

PAYLOAD = "x" * 500
CONCURRENCY = 16
STDIO_BLOCK = 50  # calls to one stdio server before the other's turn
HERE = Path(__file__).parent


class Figures:
    def __init__(self, label: str, latencies: list[float], elapsed: float, calls: int) -> None:
        self.label = label
        self.latencies, self.elapsed, self.calls = latencies, elapsed, calls
        self.rate = calls / elapsed
        ordered = sorted(latencies)
        self.p50 = statistics.median(ordered) * 1000
        self.p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        self.cpu_us: float | None = None  # CPU time of this process per call (all its threads), where measured

    @classmethod
    def joined(cls, label: str, parts: list[Figures]) -> Figures:
        """Figures measured in parts, as one measurement."""
        latencies = [latency for part in parts for latency in part.latencies]
        return cls(label, latencies, sum(part.elapsed for part in parts), sum(part.calls for part in parts))

    def row(self) -> str:
        cpu = "" if self.cpu_us is None else f"  cpu {self.cpu_us:>5.0f} us"
        return f"{self.label:<44}{self.rate:>10,.0f}/s  p50 {self.p50:>6.2f} ms  p99 {self.p99:>6.2f} ms{cpu}"


async def timed(label: str, calls: list[Callable[[], Awaitable[object]]], lanes: int = 1) -> Figures:
    latencies: list[float] = []

    async def lane(work: list[Callable[[], Awaitable[object]]]) -> None:
        for call in work:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(lane(calls[i::lanes]) for i in range(lanes)))
    return Figures(label, latencies, time.perf_counter() - started, len(calls))


def raw_sqlite(path: Path, n: int) -> Figures:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE steps (id INTEGER PRIMARY KEY, run TEXT, step TEXT, output TEXT)")
    return commit_loop(
        "raw sqlite3 (1 row per commit)",
        conn,
        n,
        lambda i: conn.execute("INSERT INTO steps (run, step, output) VALUES (?, ?, ?)", ("run", f"s{i}", PAYLOAD)),
    )


def raw_checkpoint_rows(path: Path, n: int, batch: int = 1) -> Figures:
    """The rows ``n`` checkpoints write, on the store's schema, ``batch`` checkpoints per commit."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    runs = [f"run{lane:02}" for lane in range(batch)]
    for run in runs:
        conn.execute(
            "INSERT INTO runs (run_id, name, status, retry, created_at) VALUES (?, 'n', 'running', '{}', 'x')", (run,)
        )
    now = "2026-01-01T00:00:00.000000+00:00"

    def write(i: int) -> None:
        for run in runs:
            conn.execute(
                "INSERT INTO steps (run_id, step, status, attempt, output, started_at, ended_at) "
                "VALUES (?, ?, 'completed', 1, ?, ?, ?)",
                (run, f"s{i}", f'"{PAYLOAD}"', now, now),
            )
            conn.execute(
                "INSERT INTO journal (run_id, at, kind, step, attempt) VALUES (?, ?, 'step_completed', ?, 1)",
                (run, now, f"s{i}"),
            )

    label = (
        "  (same rows as a checkpoint, raw sqlite3)"
        if batch == 1
        else f"  (the same rows, {batch} checkpoints per commit)"
    )
    return commit_loop(label, conn, n // batch, write, per_commit=batch)


def commit_loop(
    label: str, conn: sqlite3.Connection, commits: int, write: Callable[[int], object], per_commit: int = 1
) -> Figures:
    latencies = []
    started = time.perf_counter()
    for i in range(commits):
        t = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        write(i)
        conn.execute("COMMIT")
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    conn.close()
    return Figures(label, latencies, elapsed, commits * per_commit)


async def engine_figures(opened: Store, n: int) -> tuple[Figures, Figures]:
    """Checkpoints through the engine on an opened store (closed here): one run, then 16 at once."""
    async with opened as store:
        engine = Engine(store)
        run_id = (await engine.runs.start_run(StartRunInput(name="bench"))).run.run_id

        def call(run: str, step: str) -> Callable[[], Awaitable[object]]:
            return lambda: engine.runs.checkpoint(CheckpointInput(run_id=run, step=step, output=PAYLOAD))

        async def measured(label: str, calls: list[Callable[[], Awaitable[object]]], lanes: int = 1) -> Figures:
            # The CPU a checkpoint costs here (event loop and connection threads alike), whatever the disk's
            # fsync takes: what the code can change.
            cpu = time.process_time()
            figures = await timed(label, calls, lanes)
            figures.cpu_us = (time.process_time() - cpu) / len(calls) * 1e6
            return figures

        sequential = await measured("engine, sequential", [call(run_id, f"s{i}") for i in range(n)])
        runs = [(await engine.runs.start_run(StartRunInput(name="bench"))).run.run_id for _ in range(CONCURRENCY)]
        per_run = max(1, 4 * n // CONCURRENCY)
        calls = [call(run, f"s{i}") for i in range(per_run) for run in runs]
        concurrent = await measured(f"engine, {CONCURRENCY} concurrent runs", calls, lanes=CONCURRENCY)
    return sequential, concurrent


async def stdio_figures(path: Path, n: int, profile: Path | None = None) -> tuple[Figures, Figures]:
    env = {name: os.environ[name] for name in ("PATH", "HOME", "PYTHONPATH") if name in os.environ}

    def profiled(name: str) -> list[str]:
        return [] if profile is None else ["-m", "cProfile", "-o", str(profile / f"{name}.prof")]

    # Started outside the checkout, so that the package imported is PYTHONPATH's when it names one.
    orchestrator = StdioServerParameters(
        command=sys.executable,
        args=[*profiled("checkpoint"), "-m", "mcp_orchestrator", "serve", "--db", str(path)],
        env=env,
        cwd=path.parent,
    )
    noop = StdioServerParameters(
        command=sys.executable, args=[*profiled("noop"), str(HERE / "noop_server.py")], env=env, cwd=path.parent
    )
    async with Client(noop) as baseline_client, Client(orchestrator) as client:
        await baseline_client.call_tool("noop", {"run_id": "r", "step": "warm-up"})
        started = await client.call_tool("start_run", {"name": "bench"})
        run_id = started.structured_content["run"]["run_id"]
        baseline_calls: list[Callable[[], Awaitable[object]]] = [
            lambda i=i: baseline_client.call_tool("noop", {"run_id": "r", "step": f"s{i}", "output": PAYLOAD})
            for i in range(n)
        ]
        tool_calls: list[Callable[[], Awaitable[object]]] = [
            lambda i=i: client.call_tool("checkpoint", {"run_id": run_id, "step": f"s{i}", "output": PAYLOAD})
            for i in range(n)
        ]
        # Blocks of each in turn: both lines meet the same load on a shared machine.
        parts = [
            (await timed("", baseline_calls[i : i + STDIO_BLOCK]), await timed("", tool_calls[i : i + STDIO_BLOCK]))
            for i in range(0, n, STDIO_BLOCK)
        ]
    return (
        Figures.joined("no-op tool over stdio (SDK baseline)", [baseline for baseline, _ in parts]),
        Figures.joined("checkpoint tool over stdio", [tool for _, tool in parts]),
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000, help="checkpoints per measurement (default 3000)")
    parser.add_argument("--dir", help="directory for the database files (default: a temporary one)")
    parser.add_argument(
        "--only",
        choices=("engine", "stdio"),
        help="engine: the raw sqlite3 and engine lines alone; stdio: the two stdio lines alone (default: all)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="times the two stdio lines are measured (default 1)")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="profile the stdio servers into DIR (cProfile)")
    args = parser.parse_args()
    engine, stdio = args.only in (None, "engine"), args.only in (None, "stdio")
    lines: list[Figures] = []
    checks: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        root = Path(directory)
        if engine:
            raw = raw_sqlite(root / "raw.db", args.n)
            rows = raw_checkpoint_rows(root / "rows.db", args.n)
            rows_batched = raw_checkpoint_rows(root / "rows16.db", 4 * args.n, batch=CONCURRENCY)
            sequential, concurrent = await engine_figures(SQLiteStore(root / "engine.db"), args.n)
            lines += [raw, rows, rows_batched, sequential, concurrent]
            checks += [
                ("engine sequential / raw sqlite3", sequential.rate / raw.rate, 0.7),
                (f"engine {CONCURRENCY} concurrent / raw sqlite3", concurrent.rate / raw.rate, 3.0),
            ]
        ratios: list[float] = []
        for round_ in range(args.rounds if stdio else 0):
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
            baseline, tool = await stdio_figures(root / f"stdio{round_}.db", max(500, args.n // 3), args.profile)
            lines += [baseline, tool]
            ratios.append(tool.rate / baseline.rate)
        if ratios:
            checks.append(("checkpoint tool / no-op tool (stdio)", statistics.median(ratios), 0.8))

    print(f"mcp-orchestrator checkpoint benchmark: {args.n} checkpoints of {len(PAYLOAD)} bytes, on {sys.platform}")
    for figures in lines:
        print("  " + figures.row())
    print()
    for label, ratio, target in checks:
        verdict = "meets" if ratio >= target else "BELOW"
        print(f"  {label:<44}{ratio:>6.2f}x   target {target}x: {verdict}")
    if len(ratios) > 1:
        print(f"    (the median of {len(ratios)} rounds: {', '.join(f'{ratio:.2f}x' for ratio in ratios)})")
    if engine:
        print("  for reference, the same ratios for our rows written by raw sqlite3 (the I/O ceiling):")
        print(f"    {'one per commit / raw sqlite3':<42}{rows.rate / raw.rate:>6.2f}x")
        print(f"    {f'{CONCURRENCY} per commit / raw sqlite3':<42}{rows_batched.rate / raw.rate:>6.2f}x")
    for name in ("noop", "checkpoint") if args.profile else ():
        print(f"\nthe {name} tool's server, the top of its profile (main thread, start-up included):")
        pstats.Stats(str(args.profile / f"{name}.prof"), stream=sys.stdout).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    if "--db" in sys.argv or "--node-worker" in sys.argv:
        from postgres_checkpoint import postgres_main

        asyncio.run(postgres_main())
    else:
        asyncio.run(main())
