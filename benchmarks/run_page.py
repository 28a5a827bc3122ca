"""A busy run's page: its timeline, tree and values rendered whole, against an empty run's page.

    python benchmarks/run_page.py [--steps 150] [--children 50] [--input-kb 512] [--n 50]

Builds, in a fresh SQLite store, a run with ``--steps`` checkpoints (JSON outputs of a few dozen nodes,
every tenth failed once first), an event wait ended by an event, ``--children`` child runs (each with a
child of its own) and an input of about ``--input-kb`` KiB; then renders its page ``--n`` times through
the dashboard's routes in this process (no socket), and the page of a run with nothing in it as the
baseline; then the page of a run whose output is a large string nested deep (``--depth`` levels). A run
page is rendered again after every commit that a person watching it could see, so its cost bounds how
often a live page can follow a busy run.

Target: p95 under 200 ms for each page.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
from measure import percentile
from starlette.applications import Starlette

from mcp_orchestrator.models import (
    CheckpointInput,
    FinishRunInput,
    SendEventInput,
    StartRunInput,
    WaitForEventInput,
)
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.store.sqlite import SQLiteStore
from mcp_orchestrator.web.dashboard import dashboard_routes

TARGET_MS = 200.0


async def busy_run(engine: Engine, steps: int, children: int, input_kb: int) -> str:
    notes = ["x" * 1000 for _ in range(input_kb)]
    run_id = (await engine.runs.start_run(StartRunInput(name="busy", input={"notes": notes}))).run.run_id
    for number in range(steps):
        step = f"step-{number}"
        if number % 10 == 0:
            await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step=step, error="flaky"))
        output = {"files": [f"src/{n}.py" for n in range(20)], "stats": {"added": number, "removed": 2}}
        await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step=step, output=output))
    await engine.events.wait_for_event(WaitForEventInput(run_id=run_id, step="ci", event="ci.done", block_s=0))
    await engine.events.send_event(SendEventInput(name="ci.done", data={"ok": True}))
    for number in range(children):
        child = (await engine.runs.start_run(StartRunInput(name=f"child-{number}", parent_run_id=run_id))).run
        grandchild = (await engine.runs.start_run(StartRunInput(name="leaf", parent_run_id=child.run_id))).run
        await engine.runs.finish_run(FinishRunInput(run_id=grandchild.run_id, output={"n": number}))
        await engine.runs.finish_run(FinishRunInput(run_id=child.run_id, output="done"))
    return run_id


async def timed(n: int, http: httpx2.AsyncClient, path: str) -> tuple[list[float], int]:
    samples, size = [], 0
    for _ in range(n):
        began = time.perf_counter()
        response = await http.get(path)
        samples.append(time.perf_counter() - began)
        assert response.status_code == 200, response.text[:300]
        size = len(response.content)
    return samples, size


def line(label: str, samples: list[float], size: int, base: float, target_ms: float | None = None) -> str:
    p50, p95 = statistics.median(samples) * 1000, percentile(samples, 0.95) * 1000
    ratio = p50 / (base * 1000)
    verdict = (
        "" if target_ms is None else f"  target p95 < {target_ms:g} ms: {'meets' if p95 < target_ms else 'MISSES'}"
    )
    return (
        f"  {label:<36}p50 {p50:8.2f} ms  p95 {p95:8.2f} ms  {size / 1024:8.0f} KiB  ({ratio:5.1f}x the baseline)"
        + verdict
    )


async def deep_run(engine: Engine, depth: int, kb: int) -> str:
    value: Any = "y" * (kb * 1024)
    for level in range(depth):
        value = {f"level-{level}": value}
    run_id = (await engine.runs.start_run(StartRunInput(name="deep"))).run.run_id
    await engine.runs.finish_run(FinishRunInput(run_id=run_id, output=value))
    return run_id


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--children", type=int, default=50)
    parser.add_argument("--input-kb", type=int, default=512)
    parser.add_argument("--depth", type=int, default=60)
    parser.add_argument("--deep-kb", type=int, default=900)
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        async with SQLiteStore(Path(directory) / "store.db", synchronous="normal") as store:
            engine = Engine(store, workspace=directory)
            empty = (await engine.runs.start_run(StartRunInput(name="empty"))).run.run_id
            busy = await busy_run(engine, args.steps, args.children, args.input_kb)
            deep = await deep_run(engine, args.depth, args.deep_kb)
            app = Starlette(routes=dashboard_routes(engine, None))
            async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://bench") as http:
                await http.get(f"/runs/{empty}")
                baseline, size = await timed(args.n, http, f"/runs/{empty}")
                base = statistics.median(baseline)
                print(line("baseline: an empty run's page", baseline, size, base))
                label = f"{args.steps} steps, {args.children} children"
                print(line(label, *await timed(args.n, http, f"/runs/{busy}"), base, TARGET_MS))
                label = f"{args.deep_kb} KiB string {args.depth} deep"
                print(line(label, *await timed(args.n, http, f"/runs/{deep}"), base, TARGET_MS))


if __name__ == "__main__":
    asyncio.run(main())
