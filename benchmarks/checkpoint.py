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
import contextlib
import json
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from floor import Floor, open_rows, write_rows
from mcp import Client, StdioServerParameters
from measure import child_env, percentile

from mcp_orchestrator.ids import new_id
from mcp_orchestrator.models import CheckpointInput, StartRunInput
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.store import Store
from mcp_orchestrator.store.sqlite import SQLiteStore

PAYLOAD = "x" * 500
OUTPUT_JSON = json.dumps(PAYLOAD)  # as the store keeps it
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
        self.p99 = percentile(ordered, 0.99) * 1000
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
    runs = [new_id() for _ in range(batch)]
    conn = open_rows(path, runs)

    def write(i: int) -> None:
        for run in runs:
            write_rows(conn, run, f"s{i}", OUTPUT_JSON)

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


async def measured(label: str, calls: list[Callable[[], Awaitable[object]]], lanes: int = 1) -> Figures:
    """``timed``, with the CPU a call cost this process (its event loop and its threads alike), whatever the
    disk's fsync takes: what code can change."""
    cpu = time.process_time()
    figures = await timed(label, calls, lanes)
    figures.cpu_us = (time.process_time() - cpu) / len(calls) * 1e6
    return figures


async def sequential_and_concurrent(
    label: str, runs: list[str], n: int, checkpoint: Callable[[str, str], Awaitable[object]]
) -> tuple[Figures, Figures]:
    """``n`` checkpoints on the first run one after another, then ``4 n`` on the others, CONCURRENCY at once."""
    sequential = await measured(f"{label}, sequential", [lambda i=i: checkpoint(runs[0], f"s{i}") for i in range(n)])
    lanes = runs[1 : 1 + CONCURRENCY]
    calls = [lambda run=run, i=i: checkpoint(run, f"s{i}") for i in range(4 * n // CONCURRENCY) for run in lanes]
    concurrent = await measured(f"{label}, {CONCURRENCY} concurrent runs", calls, lanes=CONCURRENCY)
    return sequential, concurrent


async def engine_figures(opened: Store, n: int) -> tuple[Figures, Figures]:
    """Checkpoints through the engine on an opened store (closed here): one run, then 16 at once."""
    async with opened as store:
        engine = Engine(store)
        runs = [(await engine.runs.start_run(StartRunInput(name="bench"))).run.run_id for _ in range(1 + CONCURRENCY)]
        return await sequential_and_concurrent(
            "engine",
            runs,
            n,
            lambda run, step: engine.runs.checkpoint(CheckpointInput(run_id=run, step=step, output=PAYLOAD)),
        )


async def floor_figures(path: Path, n: int) -> tuple[Figures, Figures]:
    """The same checkpoints through ``Floor``: what the engine's lines are bounded by."""
    runs = [new_id() for _ in range(1 + CONCURRENCY)]
    async with Floor(path, runs) as floor:
        return await sequential_and_concurrent(
            "floor", runs, n, lambda run, step: floor.checkpoint(run, step, OUTPUT_JSON)
        )


async def stdio_figures(
    db: str, workdir: Path, n: int, profile: Path | None = None, floor: Path | None = None
) -> tuple[Figures, Figures, Figures | None]:
    """The no-op tool's and the checkpoint tool's figures over stdio, and with ``floor`` (a database file to
    create) the no-op tool's when each call also commits a checkpoint's rows through ``Floor``."""
    env = child_env()

    def server(name: str, *args: str) -> StdioServerParameters:
        # Started outside the checkout, so that the package imported is PYTHONPATH's when it names one.
        profiled = [] if profile is None else ["-m", "cProfile", "-o", str(profile / f"{name}.prof")]
        return StdioServerParameters(command=sys.executable, args=[*profiled, *args], env=env, cwd=workdir)

    noop_server = str(HERE / "noop_server.py")
    async with contextlib.AsyncExitStack() as stack:
        baseline_client = await stack.enter_async_context(Client(server("noop", noop_server)))
        client = await stack.enter_async_context(
            Client(server("checkpoint", "-m", "mcp_orchestrator", "serve", "--db", db))
        )
        started = await client.call_tool("start_run", {"name": "bench"})
        run_id = started.structured_content["run"]["run_id"]
        lines: list[tuple[str, Client, str, str]] = [
            ("no-op tool over stdio (SDK baseline)", baseline_client, "noop", "r"),
            ("checkpoint tool over stdio", client, "checkpoint", run_id),
        ]
        if floor is not None:
            floor_run = new_id()
            floor_client = await stack.enter_async_context(
                Client(server("floor", noop_server, "--write", str(floor), floor_run))
            )
            lines.append(("no-op tool + floor's commit over stdio", floor_client, "noop", floor_run))
        await baseline_client.call_tool("noop", {"run_id": "r", "step": "warm-up"})
        calls = [
            [
                lambda client=client, tool=tool, run=run, i=i: client.call_tool(
                    tool, {"run_id": run, "step": f"s{i}", "output": PAYLOAD}
                )
                for i in range(n)
            ]
            for _, client, tool, run in lines
        ]
        # Blocks of each in turn: every line meets the same load on a shared machine.
        parts = [[await timed("", line[i : i + STDIO_BLOCK]) for line in calls] for i in range(0, n, STDIO_BLOCK)]
    baseline, tool, *floored = (
        Figures.joined(label, [part[line] for part in parts]) for line, (label, *_) in enumerate(lines)
    )
    return baseline, tool, floored[0] if floored else None


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
    # What bounds each ratio checked: the same ratio for raw rows, or for the floor (see floor.py).
    bounds: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        root = Path(directory)
        if engine:
            raw = raw_sqlite(root / "raw.db", args.n)
            rows = raw_checkpoint_rows(root / "rows.db", args.n)
            rows_batched = raw_checkpoint_rows(root / "rows16.db", 4 * args.n, batch=CONCURRENCY)
            floor_sequential, floor_concurrent = await floor_figures(root / "floor.db", args.n)
            sequential, concurrent = await engine_figures(SQLiteStore(root / "engine.db"), args.n)
            lines += [raw, rows, rows_batched, floor_sequential, floor_concurrent, sequential, concurrent]
            checks += [
                ("engine sequential / raw sqlite3", sequential.rate / raw.rate, 0.7),
                (f"engine {CONCURRENCY} concurrent / raw sqlite3", concurrent.rate / raw.rate, 3.0),
            ]
            bounds += [
                ("our rows, one per commit / raw sqlite3 (the I/O ceiling)", rows.rate / raw.rate),
                (f"our rows, {CONCURRENCY} per commit / raw sqlite3 (the I/O ceiling)", rows_batched.rate / raw.rate),
                ("floor, sequential / raw sqlite3", floor_sequential.rate / raw.rate),
                (f"floor, {CONCURRENCY} concurrent / raw sqlite3", floor_concurrent.rate / raw.rate),
                ("engine / floor, sequential", sequential.rate / floor_sequential.rate),
                (f"engine / floor, {CONCURRENCY} concurrent", concurrent.rate / floor_concurrent.rate),
            ]
        ratios: list[float] = []
        floor_ratios: list[float] = []
        for round_ in range(args.rounds if stdio else 0):
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
            n = max(500, args.n // 3)
            database, floor_database = root / f"stdio{round_}.db", root / f"stdio-floor{round_}.db"
            baseline, tool, floored = await stdio_figures(str(database), root, n, args.profile, floor_database)
            assert floored is not None
            lines += [baseline, tool, floored]
            ratios.append(tool.rate / baseline.rate)
            floor_ratios.append(floored.rate / baseline.rate)
        if ratios:
            checks.append(("checkpoint tool / no-op tool (stdio)", statistics.median(ratios), 0.8))
            bounds.append(("no-op tool + floor's commit / no-op tool (stdio)", statistics.median(floor_ratios)))

    print(f"mcp-orchestrator checkpoint benchmark: {args.n} checkpoints of {len(PAYLOAD)} bytes, on {sys.platform}")
    for figures in lines:
        print("  " + figures.row())
    print()
    for label, ratio, target in checks:
        verdict = "meets" if ratio >= target else "BELOW"
        print(f"  {label:<44}{ratio:>6.2f}x   target {target}x: {verdict}")
    if len(ratios) > 1:
        print(f"    (the median of {len(ratios)} rounds: {', '.join(f'{ratio:.2f}x' for ratio in ratios)})")
    print("  what bounds them (the same ratios without the engine's code):")
    for label, ratio in bounds:
        print(f"    {label:<66}{ratio:>6.2f}x")
    for name in ("noop", "checkpoint") if args.profile else ():
        print(f"\nthe {name} tool's server, the top of its profile (main thread, start-up included):")
        pstats.Stats(str(args.profile / f"{name}.prof"), stream=sys.stdout).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    if "--db" in sys.argv or "--node-worker" in sys.argv:
        from postgres_checkpoint import postgres_main

        asyncio.run(postgres_main())
    else:
        asyncio.run(main())
