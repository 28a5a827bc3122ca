"""Send-to-wake latency and send_event throughput, beside the cost of one durable commit.

    python benchmarks/events.py [--n 200]

1. send_event with nobody waiting (the floor any wake-up pays: the event is stored durably first);
2. send-to-wake, same process: a wait_for_event blocked in this process, send_event from this process;
3. send-to-wake, across processes: the sender is another OS process on the same store;
4. send_event throughput with nobody waiting, one sender, and 16 senders at once.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from measure import percentile

from mcp_orchestrator.models import SendEventInput, StartRunInput, WaitForEventInput
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.store.sqlite import SQLiteStore


def summary(label: str, seconds: list[float]) -> str:
    p50, p99 = statistics.median(seconds) * 1000, percentile(seconds, 0.99) * 1000
    return f"  {label:<46}p50 {p50:>7.2f} ms  p99 {p99:>7.2f} ms  ({len(seconds)} samples)"


async def wake_latencies(engine: Engine, n: int, send: Callable[[str], Awaitable[float]]) -> list[float]:
    run_id = (await engine.runs.start_run(StartRunInput(name="bench"))).run.run_id
    latencies = []
    for i in range(n):
        wait = WaitForEventInput(run_id=run_id, step=f"w{i}", event=f"e{i}", block_s=30)
        await engine.events.wait_for_event(wait.model_copy(update={"block_s": 0}))  # registered
        waiter = asyncio.ensure_future(engine.events.wait_for_event(wait))
        await asyncio.sleep(0.02)  # let it block
        sent_at = await send(f"e{i}")
        result = await waiter
        assert result.status == "received"
        latencies.append(time.time() - sent_at)
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="wake-ups per measurement (default 200)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "events.db"
        async with SQLiteStore(path) as store:
            engine = Engine(store)
            commits = []
            for i in range(args.n):
                started = time.perf_counter()
                await engine.events.send_event(SendEventInput(name="nobody-waits", data={"i": i}))
                commits.append(time.perf_counter() - started)

            async def send_here(name: str) -> float:
                sent_at = time.time()
                await engine.events.send_event(SendEventInput(name=name))
                return sent_at

            local = await wake_latencies(engine, args.n, send_here)

            sender = subprocess.Popen(
                [sys.executable, __file__, "--sender", str(path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
            assert sender.stdin is not None and sender.stdout is not None
            sender.stdout.readline()  # ready

            async def send_elsewhere(name: str) -> float:
                sender.stdin.write(name + "\n")
                return float(await asyncio.to_thread(sender.stdout.readline))

            remote = await wake_latencies(engine, args.n, send_elsewhere)
            sender.stdin.close()
            sender.wait()

            count = 10 * args.n
            started = time.perf_counter()
            for i in range(count):
                await engine.events.send_event(SendEventInput(name="throughput", data={"i": i}))
            one_sender = count / (time.perf_counter() - started)
            started = time.perf_counter()
            await asyncio.gather(
                *(
                    engine.events.send_event(SendEventInput(name="throughput", data={"lane": lane, "i": i}))
                    for lane in range(16)
                    for i in range(count // 16)
                )
            )
            many_senders = (count // 16 * 16) / (time.perf_counter() - started)

    print("mcp-orchestrator events benchmark")
    print(summary("send_event, nobody waiting (baseline)", commits))
    print(summary("send-to-wake, same process", local))
    print(summary("send-to-wake, sender in another process", remote))
    print(f"  {'send_event throughput, one sender':<46}{one_sender:>9,.0f}/s")
    print(f"  {'send_event throughput, 16 senders':<46}{many_senders:>9,.0f}/s")
    print()
    floor = statistics.median(commits)
    for label, value, target in (
        ("same process p50", statistics.median(local), 0.005),
        ("across processes p50", statistics.median(remote), 0.020),
        ("across processes p99", percentile(remote, 0.99), 0.100),
    ):
        verdict = "meets" if value < target else "ABOVE"
        ratio = f"{value / floor:.1f}x the baseline"
        print(f"  {label:<24}{value * 1000:>7.2f} ms = {ratio:<20} target < {target * 1000:.0f} ms: {verdict}")


def sender_process(path: str) -> None:
    """Read event names on stdin; send each from this process; print when it was sent."""

    async def serve() -> None:
        async with SQLiteStore(path) as store:
            engine = Engine(store)
            print("ready", flush=True)
            while line := await asyncio.to_thread(sys.stdin.readline):
                sent_at = time.time()
                await engine.events.send_event(SendEventInput(name=line.strip()), source="bench")
                print(sent_at, flush=True)

    asyncio.run(serve())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--sender":
        sender_process(sys.argv[2])
    else:
        asyncio.run(main())
