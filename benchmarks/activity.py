"""A busy agent's supervision: the runner's CPU and store writes per line of Claude Code output.

    python benchmarks/activity.py [--lines 20000] [--rate 2000] [--heartbeat-s 1.0]

An emitter process prints ``--lines`` realistic Claude Code stream-json lines (model answers with
text, tool calls, tool results with file contents and command output, a result line every hundred
lines or so) at ``--rate`` lines a second (0: as fast as the pipe takes them). Each is read through:

1. the copy alone (the baseline): the runner's copy loop (``runner._copy``) writes every line to a
   log file and feeds it to a reader, with no store at all: with the text reader, and with the
   Claude reader (which parses each line and keeps its activity);
2. the runner itself (``runner.main`` in this process, so that its threads' CPU is this process's):
   the same copy and reader, plus the heartbeat reports that carry the activity to a real SQLite
   store, one write a heartbeat; and a run of 10 lines, for the runner's cost per attempt (opening
   the store, the start and exit records), which the per-line figures of 2 include.

Printed: CPU seconds per 1,000 lines (this process's user and system time, threads included),
store writes per 1,000 lines (every ``Store.write`` call), and the ratios to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mcp_orchestrator import runner
from mcp_orchestrator.agents.streams import ClaudeReader, StreamReader, TextReader
from mcp_orchestrator.models import SpawnSubagentInput, StatusInput
from mcp_orchestrator.profiles import load_agents_config
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.store.sqlite import SQLiteStore

MODEL = "claude-sonnet-4-5-20250929"
# Words that tool output and model text are made of (the readers see JSON strings of realistic length).
TEXT = "the of and to a in is it that for on with as was this def return self import from class if else value"
WORDS = TEXT.split()
TOOLS = [
    ("Read", lambda rng: {"file_path": f"src/app/{rng.choice(WORDS)}_{rng.randrange(40)}.py"}),
    ("Grep", lambda rng: {"pattern": f"def {rng.choice(WORDS)}_", "path": "src", "output_mode": "content"}),
    ("Bash", lambda rng: {"command": f"pytest -q tests/test_{rng.choice(WORDS)}.py", "description": "Run tests"}),
    ("Edit", lambda rng: {"file_path": "src/app/views.py", "old_string": "return None", "new_string": "ok"}),
    ("Glob", lambda rng: {"pattern": f"src/**/*{rng.choice(WORDS)}*.py"}),
]

# Prints the lines of a file at a rate (lines a second; 0: at once), in ticks of 10 ms.
EMITTER = """
import sys, time
lines = open(sys.argv[1], "rb").readlines()
rate = float(sys.argv[2])
out = sys.stdout.buffer
step = len(lines) if rate <= 0 else max(1, int(rate / 100))
began = time.monotonic()
for first in range(0, len(lines), step):
    out.writelines(lines[first : first + step])
    out.flush()
    if rate > 0 and (late := began + (first + step) / rate - time.monotonic()) > 0:
        time.sleep(late)
"""


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choices(WORDS, k=count))


def model_usage(answers: int) -> dict[str, Any]:
    """Claude Code's per-model usage (``modelUsage``) of that many model answers."""
    return {
        "inputTokens": 12 * answers,
        "outputTokens": 300 * answers,
        "cacheReadInputTokens": 41_000 * answers,
        "cacheCreationInputTokens": 500 * answers,
        "costUSD": round(0.004 * answers, 6),
    }


def claude_lines(count: int, seed: int = 7) -> list[bytes]:
    """A Claude Code session's stream-json: an init, model answers (a text, or a tool call) and tool results
    (file contents, test output: from 100 characters to 8 KB), a result line every ~100 lines, a last result."""
    rng = random.Random(seed)
    session = f"{rng.getrandbits(64):016x}-bench"
    lines: list[dict[str, Any]] = [{"type": "system", "subtype": "init", "session_id": session, "model": MODEL}]
    answers = calls = results = settled = 0  # settled: the answers the previous result covered

    def result(final: bool) -> dict[str, Any]:
        nonlocal results, settled
        results += 1
        since, settled = answers - settled, answers
        return {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "num_turns": answers,
            "result": words(rng, 60 if final else 20),
            "session_id": session,
            "total_cost_usd": round(0.004 * answers, 6),
            "usage": {"input_tokens": 900, "output_tokens": 300},
            "modelUsage": {MODEL: model_usage(answers)},
            "model_usage_since_last_result": {MODEL: model_usage(since)},
            "result_index": results - 1,
        }

    while len(lines) < count - 1:
        answers += 1
        usage = {"input_tokens": 12, "output_tokens": rng.randrange(20, 900), "cache_read_input_tokens": 41_000}
        message: dict[str, Any] = {"id": f"msg_{answers:010d}", "type": "message", "role": "assistant"}
        message |= {"model": MODEL, "stop_reason": None, "usage": usage}
        if rng.random() < 0.2:
            message["content"] = [{"type": "text", "text": words(rng, rng.randrange(15, 120))}]
            lines.append({"type": "assistant", "message": message, "session_id": session, "parent_tool_use_id": None})
        else:
            calls += 1
            name, arguments = rng.choice(TOOLS)
            call = {"type": "tool_use", "id": f"toolu_{calls:012d}", "name": name, "input": arguments(rng)}
            message["content"] = [call]
            lines.append({"type": "assistant", "message": message, "session_id": session, "parent_tool_use_id": None})
            output = words(rng, int(rng.lognormvariate(5, 1)) % 1500 + 20)
            failed = rng.random() < 0.05
            content = [{"type": "tool_result", "tool_use_id": call["id"], "content": output, "is_error": failed}]
            lines.append({"type": "user", "message": {"role": "user", "content": content}, "session_id": session})
        if rng.random() < 0.01:
            lines.append(result(final=False))
    lines.append(result(final=True))
    return [json.dumps(line).encode() + b"\n" for line in lines[:count]]


def emitter(path: Path, rate: float) -> list[str]:
    return [sys.executable, "-c", EMITTER, str(path), str(rate)]


def copy_only(argv: list[str], log: Path, reader: StreamReader) -> tuple[float, float]:
    """The baseline: the runner's copy loop with a reader, and nothing else. (CPU seconds, wall seconds)."""
    cpu, wall = time.process_time(), time.monotonic()
    agent = subprocess.Popen(argv, stdout=subprocess.PIPE)
    assert agent.stdout is not None
    with log.open("ab") as file:
        runner._copy(agent.stdout, file, reader, runner.News(), threading.Event())
    agent.wait()
    reader.finish()
    return time.process_time() - cpu, time.monotonic() - wall


class Writes:
    """Counts the store's write transactions (every ``Store.write`` of the SQLite store, in this process)."""

    def __init__(self) -> None:
        self.count = 0
        write = SQLiteStore.write

        async def counted(store: SQLiteStore, fn: Callable[..., Any], *, wake: bool = True) -> Any:
            self.count += 1
            return await write(store, fn, wake=wake)

        SQLiteStore.write = counted  # type: ignore[method-assign,assignment]


async def on_store(db: Path, config: Path, work: Callable[[Engine], Awaitable[Any]]) -> Any:
    async with SQLiteStore(db) as store:
        return await work(Engine(store, workspace=str(config.parent), agents=load_agents_config(config)))


def through_runner(root: Path, name: str, argv: list[str], writes: Writes) -> tuple[float, float, int, dict[str, Any]]:
    """The runner's whole path for one attempt (claimed here, as the supervisor would): (CPU seconds, wall
    seconds, store writes, what the store holds afterwards)."""
    db, config = root / "bench.db", root / "config.toml"

    async def claim(engine: Engine) -> dict[str, Any]:
        run = (await engine.subagents.spawn(SpawnSubagentInput(prompt=name, agent="bench", cwd=str(root)))).run
        [launch] = await engine.subagents.claim("bench")
        assert launch.agent.run_id == run.run_id
        run_dir = root / name
        run_dir.mkdir()
        return {
            "run_id": run.run_id,
            "attempt": launch.agent.attempt,
            "argv": argv,
            "env": {},
            "cwd": str(root),
            "stdin": None,
            "input": "text",
            "stdout": str(run_dir / "stdout.log"),
            "stderr": str(run_dir / "stderr.log"),
            "output": "claude-json",
            "profile": "bench",
            "db": str(db),
            "node": "bench",
            "config": str(config),
        }

    spec = asyncio.run(on_store(db, config, claim))
    spec_path = root / f"{name}.json"
    spec_path.write_text(json.dumps(spec))
    before, cpu, wall = writes.count, time.process_time(), time.monotonic()
    runner.main(["runner", str(spec_path)])
    cpu, wall, count = time.process_time() - cpu, time.monotonic() - wall, writes.count - before

    async def look(engine: Engine) -> dict[str, Any]:
        status = await engine.runs.status(StatusInput(run_id=spec["run_id"], activity_limit=1000, log_lines=0))
        assert status.process is not None
        kept = await engine.store.read(lambda tx: len(tx.read_activity(spec["run_id"], 1_000_000)))
        return {
            "status": status.run.status,
            "kept": kept,
            "dropped": status.process.activity_dropped,
            "cost": status.run.usage.cost_usd if status.run.usage else None,
        }

    return cpu, wall, count, asyncio.run(on_store(db, config, look))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=20_000, help="stream-json lines the agent prints")
    parser.add_argument("--rate", type=float, default=2000, help="lines a second (0: as fast as possible)")
    parser.add_argument("--heartbeat-s", type=float, default=1.0, help="the runner's heartbeat, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        lines = claude_lines(args.lines)
        stream = root / "stream.jsonl"
        stream.write_bytes(b"".join(lines))
        (root / "short.jsonl").write_bytes(b"".join(claude_lines(10)))
        (root / "config.toml").write_text(
            f"[supervisor]\nheartbeat_s = {args.heartbeat_s}\n\n"
            f'[profiles.bench]\ncommand = ["true"]\noutput = "claude-json"\n'
        )
        kib = sum(map(len, lines)) / len(lines) / 1024
        rate = f"{args.rate:,.0f} lines/s" if args.rate > 0 else "as fast as possible"
        print(f"activity: {len(lines):,} Claude Code stream-json lines ({kib:.1f} KiB on average), {rate}, ", end="")
        print(f"heartbeat {args.heartbeat_s:g} s\n")
        per = 1000 / len(lines)

        text_cpu, text_wall = copy_only(emitter(stream, args.rate), root / "text.log", TextReader())
        claude_reader = ClaudeReader()
        base_cpu, base_wall = copy_only(emitter(stream, args.rate), root / "claude.log", claude_reader)
        writes = Writes()
        fixed_cpu, _, fixed_writes, _ = through_runner(root, "short", emitter(root / "short.jsonl", 0), writes)
        cpu, wall, count, stored = through_runner(root, "busy", emitter(stream, args.rate), writes)

        header = f"  {'':46}{'CPU s / 1k lines':>17}{'writes / 1k lines':>19}{'wall s':>9}"
        print(header)
        print(f"  {'copy to the log, text reader':46}{text_cpu * per:17.4f}{'-':>19}{text_wall:9.1f}")
        print(f"  {'copy to the log, Claude reader (baseline)':46}{base_cpu * per:17.4f}{'-':>19}{base_wall:9.1f}")
        print(f"  {'runner: copy, reader, batched reports':46}{cpu * per:17.4f}{count * per:19.3f}{wall:9.1f}")
        print(f"  {'runner, an attempt of 10 lines (per attempt)':46}{fixed_cpu:15.3f} s{fixed_writes:12d} writes")
        print()
        print(f"  runner / baseline, CPU:                 {cpu / base_cpu:.2f}x")
        print(f"  runner minus its cost per attempt, CPU: {(cpu - fixed_cpu) / base_cpu:.2f}x the baseline")
        print(f"  Claude reader / text reader, CPU:       {base_cpu / text_cpu:.2f}x")
        entries = stored["kept"] + stored["dropped"]
        print(
            f"  activity entries: {entries:,} ({entries * per:.0f} per 1k lines; {stored['kept']:,} kept, "
            f"{stored['dropped']:,} dropped by the cap) in {count} writes: {entries / max(count, 1):.0f} per write"
        )
        print(f"  store writes a second of the agent's output: {count / wall:.2f} (heartbeat {args.heartbeat_s:g} s)")
        print(f"  the run: {stored['status']}, its cost recorded: ${stored['cost'] or 0:,.2f}")


if __name__ == "__main__":
    main()
