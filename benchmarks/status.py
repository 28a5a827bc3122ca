"""Reading a big store: status of one run, list_runs with filters, the dashboard's run list.

    python benchmarks/status.py [--runs 100000] [--steps-per-run 10] [--n 300]

Fills a fresh store with ``--runs`` runs of ``--steps-per-run`` completed steps each (and their
journal entries), labelled and named in a few dozen groups, mostly completed, some running,
waiting or failed. Then measures, each ``--n`` times: ``status`` of a random run (steps and the
latest 50 journal entries), ``list_runs`` filtered by status, by name and by label, and the
dashboard's run list page fetched over HTTP from a real ``serve --http``. The baseline, measured
on the same file in the same run: a raw sqlite3 point lookup of one run row by id.

Targets: p99 under 20 ms for status and list_runs, under 100 ms for the page.

Then sizes, in bytes of JSON (``--sizes-only`` measures only these): what ``status``, ``start_run`` (a
run coming back) and ``list_runs`` answer a model for a run of 300 steps with 2 KB outputs and 200
runs with 2 KB inputs, against the whole answer (the baseline: what they answered before answers were
fitted to ``max_result_bytes``), and the tools' schemas as ``tools/list`` sends them, against the
schemas pydantic generates. Target: every answer within the budget (24 KiB), the tool list under half
of its baseline.

Last, a long run (``--long-steps``, 5,000 steps of 500 bytes): ``status`` from a real stdio server, for a
model and with ``steps_limit=50``, against ``status`` of a run of 50 steps. Target: p99 under 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
from mcp import Client, StdioServerParameters
from measure import child_env, percentile

from mcp_orchestrator.ids import new_id
from mcp_orchestrator.models import (
    CheckpointInput,
    ListRunsInput,
    Run,
    RunStatus,
    StartRunInput,
    StatusInput,
    Step,
    StepStatus,
)
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.services.sizing import json_size
from mcp_orchestrator.store.base import Transaction
from mcp_orchestrator.store.sqlite import SQLiteStore
from mcp_orchestrator.tools import TOOLS, engine_tools

STATUSES = [RunStatus.COMPLETED] * 17 + [RunStatus.RUNNING, RunStatus.FAILED, RunStatus.WAITING]


def fill(tx: Transaction, first: int, count: int, steps: int, start: datetime) -> list[str]:
    ids = []
    for number in range(first, first + count):
        at = start + timedelta(seconds=number)
        status = STATUSES[number % len(STATUSES)]
        run = Run(
            run_id=new_id(),
            name=f"task-{number % 40}",
            status=status,
            labels={"repo": f"repo-{number % 25}"},
            workspace=f"/projects/p{number % 10}",
            created_at=at,
            updated_at=at,
            ended_at=at + timedelta(seconds=30) if status.terminal else None,
        )
        tx.insert_run(run, events_after=0)
        for index in range(steps):
            step = Step(
                step=f"step-{index}", status=StepStatus.COMPLETED, attempt=1, output={"n": index}, started_at=at
            )
            tx.save_step(run.run_id, step.model_copy(update={"ended_at": at + timedelta(seconds=1)}))
            tx.append_journal(run.run_id, "step_completed", at, step.step, 1)
        ids.append(run.run_id)
    return ids


async def timed(n: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - began)
    return samples


def line(label: str, samples: list[float], target_ms: float | None, base_p99: float) -> str:
    p50, p99 = statistics.median(samples) * 1000, percentile(samples, 0.99) * 1000
    verdict = (
        "" if target_ms is None else f"  target p99 < {target_ms:g} ms: {'meets' if p99 < target_ms else 'MISSES'}"
    )
    ratio = percentile(samples, 0.99) / base_p99
    return f"  {label:<38}p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  ({ratio:6.1f}x the baseline's p99){verdict}"


def size_line(label: str, whole: int, fitted: int, budget: int | None) -> str:
    verdict = "" if budget is None else f"  within {budget:,}: {'meets' if fitted <= budget else 'MISSES'}"
    return f"  {label:<40}{whole:>10,} -> {fitted:>8,} bytes  ({whole / fitted:5.1f}x smaller){verdict}"


async def sizes(directory: Path) -> None:
    """What a model is handed, whole (the baseline) and fitted to the budget, in bytes of JSON."""
    print("\nsizes: the whole answer (baseline) -> the answer a model gets")
    async with SQLiteStore(Path(directory) / "sizes.db", synchronous="normal") as store:
        engine = Engine(store)
        budget = engine.max_result_bytes
        long = StartRunInput(name="long", key="long", input={"task": "t" * 2000})
        run_id = (await engine.runs.start_run(long)).run.run_id
        for index in range(300):
            output = {"n": index, "text": "x" * 2000}
            await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step=f"step-{index}", output=output))
        for index in range(200):
            await engine.runs.start_run(StartRunInput(name=f"other-{index}", input={"text": "y" * 2000}))
        status = StatusInput(run_id=run_id)
        pairs = {
            "status, 300 steps x 2 KB": (engine.runs.status(status), engine.runs.status(status, budget=budget)),
            "start_run coming back, 300 x 2 KB": (
                engine.runs.start_run(long),
                engine.runs.start_run(long, budget=budget),
            ),
            "list_runs limit=200, 2 KB inputs": (
                engine.runs.list_runs(ListRunsInput(limit=200)),
                engine.runs.list_runs(ListRunsInput(limit=200), budget=budget),
            ),
        }
        for label, (whole, fitted) in pairs.items():
            print(size_line(label, json_size(await whole), json_size(await fitted), budget))
    compacted = engine_tools()
    descriptions = sum(len(tool.description) for tool in compacted)
    # The baseline: the schemas pydantic makes of the tools' models, as a server would send them uncompacted.
    generated = descriptions + sum(
        json_size(tool.input_model.model_json_schema(by_alias=True))
        + (0 if tool.text else json_size(tool.result_model.model_json_schema()))
        for tool in TOOLS
    )
    sent = descriptions + sum(json_size(tool.parameters) + json_size(tool.output_schema) for tool in compacted)
    print(size_line("tool schemas and descriptions", generated, sent, generated // 2))


async def long_run(directory: Path, steps: int, n: int) -> None:
    """``status`` of a run of many steps from a real stdio server, for a model and as the run page asks it,
    against the same of a run of 50 steps (the baseline): a status reads whole only the steps its answer
    can show, so what grows with the run is the reading of its steps' names alone."""
    print(f"\na long run: {steps:,} steps of 500 bytes against one of 50, status from a real stdio server")
    db = Path(directory) / "long.db"
    async with SQLiteStore(db, synchronous="normal") as store:
        engine = Engine(store)
        runs = {}
        for name, count in (("short", 50), ("long", steps)):
            runs[name] = run_id = (await engine.runs.start_run(StartRunInput(name=name))).run.run_id
            for first in range(0, count, 500):
                await asyncio.gather(
                    *(
                        engine.runs.checkpoint(CheckpointInput(run_id=run_id, step=f"s{index}", output="x" * 500))
                        for index in range(first, min(first + 500, count))
                    )
                )
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_orchestrator", "serve", "--db", str(db)],
        env=child_env(),
        cwd=directory,
    )
    async with Client(server) as client:

        async def status(arguments: dict[str, object]) -> list[float]:
            await client.call_tool("status", arguments)  # the first builds the models it answers with
            return await timed(n, lambda: client.call_tool("status", arguments))

        baseline = await status({"run_id": runs["short"]})
        base_p99 = percentile(baseline, 0.99)
        print(line("baseline: status of a run of 50 steps", baseline, None, base_p99))
        for label, arguments in (
            ("status of the long run", {"run_id": runs["long"]}),
            ("the same, steps_limit=50", {"run_id": runs["long"], "steps_limit": 50}),
        ):
            print(line(label, await status(arguments), 20, base_p99))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--steps-per-run", type=int, default=10)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--sizes-only", action="store_true", help="measure only the sizes of answers")
    parser.add_argument("--long-steps", type=int, default=5000, help="steps of the long run (default 5000)")
    args = parser.parse_args()
    if args.sizes_only:
        with tempfile.TemporaryDirectory() as directory:
            await sizes(Path(directory))
        return
    with tempfile.TemporaryDirectory() as directory:
        db = Path(directory) / "big.db"
        began = time.monotonic()
        ids: list[str] = []
        async with SQLiteStore(db, synchronous="normal") as store:
            start = datetime(2026, 1, 1, tzinfo=UTC)
            for first in range(0, args.runs, 1000):
                count = min(1000, args.runs - first)
                ids += await store.write(lambda tx, f=first, c=count: fill(tx, f, c, args.steps_per_run, start))
        size = db.stat().st_size / 1e6
        print(f"store: {args.runs:,} runs, {args.runs * args.steps_per_run:,} steps, {size:,.0f} MB, "
              f"filled in {time.monotonic() - began:.0f} s\n")  # fmt: skip

        with sqlite3.connect(db) as raw:
            baseline = []
            for _ in range(args.n):
                run_id = random.choice(ids)
                t0 = time.perf_counter()
                raw.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                baseline.append(time.perf_counter() - t0)
        base_p99 = percentile(baseline, 0.99)
        print(line("baseline: raw sqlite3 row by id", baseline, None, base_p99))

        async with SQLiteStore(db) as store:
            engine = Engine(store)
            measures = {
                "status of a random run": lambda: engine.runs.status(StatusInput(run_id=random.choice(ids))),
                "list_runs status=running": lambda: engine.runs.list_runs(ListRunsInput(status="running")),
                "list_runs name=task-7": lambda: engine.runs.list_runs(ListRunsInput(name="task-7")),
                "list_runs label=repo=repo-3": lambda: engine.runs.list_runs(ListRunsInput(label="repo=repo-3")),
                "list_runs status+label": lambda: engine.runs.list_runs(
                    ListRunsInput(status="failed", label="repo=repo-3")
                ),
            }
            for label, call in measures.items():
                print(line(label, await timed(args.n, call), 20, base_p99))

        env = {**os.environ, "XDG_STATE_HOME": str(Path(directory) / "state")}
        server = subprocess.Popen(
            [sys.executable, "-m", "mcp_orchestrator", "serve", "--http", "127.0.0.1:0", "--db", str(db)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stderr is not None
            url = next(line for line in server.stderr if "MCP at " in line).split("MCP at ")[1].split("/mcp")[0]
            token = (Path(directory) / "state" / "mcp-orchestrator" / "token").read_text().strip()
            # A connection per request, as a browser tab opening the page does (and no delayed-ACK stall
            # of a reused connection, which is the client library's, not the server's).
            fresh = httpx2.Limits(max_keepalive_connections=0)
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx2.AsyncClient(base_url=url, headers=headers, limits=fresh) as http:
                for label, path in (("dashboard: run list", "/"), ("dashboard: run list, filtered", "/?status=failed")):
                    samples = await timed(args.n, lambda path=path: http.get(path))
                    print(line(label, samples, 100, base_p99))
        finally:
            server.terminate()
            server.wait(timeout=10)
        await sizes(Path(directory))
        await long_run(Path(directory), args.long_steps, args.n)


if __name__ == "__main__":
    asyncio.run(main())
