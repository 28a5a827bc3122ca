"""The dashboard's pages over HTTP on a big store: the run list, one run, the events page.

    python benchmarks/dashboard.py [--runs 100000] [--events 5000] [--n 200]

Fills a fresh SQLite store through the store's own transactions (a thousand runs per commit): a quarter
of the runs are top-level, each with three children; labelled, named in a few dozen groups, mostly
completed, some running, waiting or failed (a few within the last day), each with a journal entry; and
``--events`` events, a tenth of them consumed by a waiting run. Then starts ``serve --http`` on it and
fetches, ``--n`` times each over one warm (kept-alive) connection: ``GET /healthz`` (the baseline: the
same server, socket and client with no page behind it), the run list ``/`` (counts, nesting, the
approvals badge), the run list searched by a key, by the start of ids (four characters, the shortest
taken: about 12 days of runs) and by a name a quarter of the runs share, and filtered by status, a run
page, and ``/events``.

Target: p95 under 200 ms for every page.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx2
from measure import percentile

from mcp_orchestrator.ids import new_id
from mcp_orchestrator.models import Event, Run, RunStatus, Step, StepStatus, Wait, utcnow
from mcp_orchestrator.store.base import Transaction
from mcp_orchestrator.store.sqlite import SQLiteStore

STATUSES = [RunStatus.COMPLETED] * 16 + [RunStatus.RUNNING, RunStatus.FAILED, RunStatus.WAITING, RunStatus.CANCELLED]
TARGET_MS = 200.0


def fill(tx: Transaction, first: int, count: int, start: datetime, recent: datetime) -> list[str]:
    """``count`` runs from number ``first``: every fourth top-level, the three after it its children."""
    ids: list[str] = []
    parent: str | None = None
    for number in range(first, first + count):
        at = start + timedelta(seconds=number)
        status = STATUSES[number % len(STATUSES)]
        top = number % 4 == 0
        ended = (recent if number % 97 == 0 else at + timedelta(seconds=30)) if status.terminal else None
        run = Run(
            run_id=new_id(),
            name=f"task-{number % 40}" if top else f"worker-{number % 4}",
            key=f"key-{number}" if top else None,
            status=status,
            parent_run_id=None if top else parent,
            labels={"repo": f"repo-{number % 25}"},
            workspace=f"/projects/p{number % 10}",
            created_at=at,
            updated_at=at,
            ended_at=ended,
            error={"message": "boom"} if status == RunStatus.FAILED else None,
        )
        tx.insert_run(run, events_after=0)
        tx.append_journal(run.run_id, "run_started", at)
        if status == RunStatus.WAITING:
            tx.insert_wait(run.run_id, Wait(step="ci", kind="event", events=["ci.done"], created_at=at))
            tx.save_step(run.run_id, Step(step="ci", kind="event", status=StepStatus.WAITING, attempt=1, started_at=at))
        parent = run.run_id if top else parent
        ids.append(run.run_id)
    return ids


def events(tx: Transaction, first: int, count: int, waiting: list[str], start: datetime) -> None:
    for number in range(first, first + count):
        event = Event(event_id=new_id(), name="ci.done", data={"n": number}, source="webhook", received_at=start)
        seq = tx.insert_event(event)
        if number % 10 == 0 and waiting:
            tx.consume_event(waiting[number % len(waiting)], seq, "ci")


async def timed(n: int, http: httpx2.AsyncClient, path: str) -> list[float]:
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        response = await http.get(path)
        samples.append(time.perf_counter() - began)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
        assert path != "/" or "child runs</summary>" in response.text, "the run list nests no children"
    return samples


def line(label: str, samples: list[float], base: float, target_ms: float | None = None) -> str:
    p50, p95 = statistics.median(samples) * 1000, percentile(samples, 0.95) * 1000
    verdict = (
        "" if target_ms is None else f"  target p95 < {target_ms:g} ms: {'meets' if p95 < target_ms else 'MISSES'}"
    )
    return (
        f"  {label:<38}p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  ({p50 / (base * 1000):6.1f}x the baseline's p50){verdict}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        db = Path(directory) / "big.db"
        began = time.monotonic()
        ids: list[str] = []
        now = utcnow()
        start, recent = now - timedelta(seconds=args.runs + 86400 * 3), now - timedelta(hours=2)
        async with SQLiteStore(db, synchronous="normal") as store:
            for first in range(0, args.runs, 1000):
                count = min(1000, args.runs - first)  # a multiple of 4: a batch holds whole families
                ids += await store.write(lambda tx, f=first, c=count: fill(tx, f, c, start, recent))
            waiting = [
                run_id for number, run_id in enumerate(ids) if STATUSES[number % len(STATUSES)].value == "waiting"
            ]
            for first in range(0, args.events, 1000):
                count = min(1000, args.events - first)
                await store.write(lambda tx, f=first, c=count: events(tx, f, c, waiting, now))
        size = db.stat().st_size / 1e6
        print(f"store: {args.runs:,} runs, {args.events:,} events, {size:,.0f} MB, "
              f"filled in {time.monotonic() - began:.0f} s\n")  # fmt: skip

        env = {**os.environ, "XDG_STATE_HOME": str(Path(directory) / "state")}
        command = [sys.executable, "-m", "mcp_orchestrator", "serve", "--http", "127.0.0.1:0", "--db", str(db)]
        server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        try:
            assert server.stderr is not None
            url = next(line for line in server.stderr if "MCP at " in line).split("MCP at ")[1].split("/mcp")[0]
            token = (Path(directory) / "state" / "mcp-orchestrator" / "token").read_text().strip()
            headers = {"Authorization": f"Bearer {token}"}
            parent = random.Random(7).choice(ids[::4])
            async with httpx2.AsyncClient(base_url=url, headers=headers) as http:  # one warm connection
                await http.get("/healthz")
                baseline = await timed(args.n, http, "/healthz")
                base = statistics.median(baseline)
                print(line("baseline: GET /healthz", baseline, base))
                pages = {
                    "run list /": ("/", TARGET_MS),
                    "run list, searched by key": (f"/?q=key-{args.runs // 2}", TARGET_MS),
                    "run list, searched by id start": (f"/?q={parent[:4]}", TARGET_MS),
                    "run list, searched by a common name": ("/?q=worker-1", TARGET_MS),
                    "run list, status=failed": ("/?status=failed", TARGET_MS),
                    "a run page (3 children)": (f"/runs/{parent}", TARGET_MS),
                    "events page": ("/events", TARGET_MS),
                }
                for label, (path, target) in pages.items():
                    print(line(label, await timed(args.n, http, path), base, target))
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
