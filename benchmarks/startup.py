"""How long the console script takes to answer: ``--version``, ``token``, ``runs`` and ``status RUN``, each a
fresh process (wall and CPU time), beside ``python -c pass`` (the interpreter's own start) measured in the same
run; and how long
``serve`` over stdio takes from launch to answering ``tools/list`` (as Claude Code starts one per session and
one per sub-agent), beside a bare MCP server on the same SDK with one tool (target: within 1.15x), with the
CPU time the server process had used by then (steadier than wall time on a busy machine).

    .venv/bin/python benchmarks/startup.py [--n 20]
    .venv/bin/python benchmarks/startup.py --entry mcp_orchestrator.cli:main --pythonpath OTHER_CHECKOUT

A command runs as the console script does (``from ENTRY import main; sys.exit(main())``), with a state
directory and a SQLite store of its own in a temporary directory (made by a first, unmeasured call), so
nothing of the user's is read or created. ``--entry`` and ``--pythonpath`` measure another entry point
or another checkout (an older commit, say) with the same interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from measure import BARE_SERVER, cpu_seconds, percentile

COMMANDS = (["--version"], ["token"], ["runs"], ["status", "RUN"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20, help="runs of each command (default 20)")
    parser.add_argument("--entry", default="mcp_orchestrator.console:main", help="MODULE:FUNCTION the script calls")
    parser.add_argument("--pythonpath", help="import mcp_orchestrator from this directory instead")
    args = parser.parse_args()
    module, function = args.entry.split(":")
    script = f"import sys\nfrom {module} import {function}\nsys.exit({function}())"
    with tempfile.TemporaryDirectory() as home:
        env = {key: os.environ[key] for key in ("PATH", "LANG") if key in os.environ}
        env |= {"XDG_STATE_HOME": home, "XDG_CONFIG_HOME": home, "MCP_ORCHESTRATOR_DB": str(Path(home) / "s.db")}
        if args.pythonpath:  # made absolute: the commands run from the temporary directory
            env["PYTHONPATH"] = os.path.abspath(args.pythonpath)
        os.chdir(home)  # `python -c` imports from the current directory first: from no checkout here
        baseline = _times([sys.executable, "-c", "pass"], env, args.n)
        print(f"{'command':<28}{'median':>10}{'p90':>10}{'over python':>14}{'CPU median':>14}")
        _line("python -c pass", baseline, baseline)
        started = subprocess.run(  # a run for `status` (and the store, made by a first call)
            [sys.executable, "-c", script, "start", "startup-benchmark", "--json"],
            env=env,
            check=True,
            capture_output=True,
        )
        run_id = json.loads(started.stdout)["run"]["run_id"]
        for command in COMMANDS:
            argv = [sys.executable, "-c", script, *(run_id if word == "RUN" else word for word in command)]
            subprocess.run(argv, env=env, check=True, capture_output=True)  # the token exists after
            _line(f"mcp-orchestrator {' '.join(command)}", _times(argv, env, args.n), baseline)
        servers = {
            "bare SDK server (baseline)": [sys.executable, str(BARE_SERVER)],
            "mcp-orchestrator serve": [sys.executable, "-m", "mcp_orchestrator", "serve"],
        }
        for argv in servers.values():
            _serve_once(argv, env)  # the store created, the files cached
        times: dict[str, list[tuple[float, float]]] = {label: [] for label in servers}
        for _ in range(args.n):  # interleaved, so that a busy spell on the machine falls on both
            for label, argv in servers.items():
                times[label].append(_serve_once(argv, env))
        print(f"\n{'launch to tools/list (stdio)':<28}{'median':>10}{'p90':>10}{'CPU median':>14}")
        medians = []
        for label, samples in times.items():
            wall, cpu = [sample[0] for sample in samples], [sample[1] for sample in samples]
            medians.append((percentile(wall, 0.5), percentile(cpu, 0.5)))
            print(
                f"{label:<28}{medians[-1][0] * 1000:>8.0f} ms{percentile(wall, 0.9) * 1000:>7.0f} ms"
                f"{medians[-1][1] * 1000:>11.0f} ms"
            )
        (bare_wall, bare_cpu), (serve_wall, serve_cpu) = medians
        ratio = serve_wall / bare_wall
        print(
            f"serve / bare: {ratio:.2f}x wall (target 1.15x: {'meets' if ratio <= 1.15 else 'ABOVE'}), "
            f"{serve_cpu / bare_cpu:.2f}x CPU"
        )


def _serve_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds from launching an MCP server over stdio to its answer to tools/list, and the CPU
    seconds the server process had used by then."""
    from mcp import Client, StdioServerParameters

    async def once() -> tuple[float, float]:
        start = time.perf_counter()
        async with Client(StdioServerParameters(command=argv[0], args=argv[1:], env=env)) as client:
            await client.list_tools()
            wall = time.perf_counter() - start
            (server,) = psutil.Process().children()  # the client's one process
            return wall, cpu_seconds(server.pid)

    return asyncio.run(once())


def _times(argv: list[str], env: dict[str, str], n: int) -> list[tuple[float, float]]:
    """Wall and CPU seconds (user and system) of ``n`` fresh runs of ``argv``."""
    times = []
    for _ in range(n):
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append((wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime))
    return times


def _line(label: str, times: list[tuple[float, float]], baseline: list[tuple[float, float]]) -> None:
    wall = [sample[0] for sample in times]
    median, p90, cpu = percentile(wall, 0.5), percentile(wall, 0.9), percentile([sample[1] for sample in times], 0.5)
    over = median - percentile([sample[0] for sample in baseline], 0.5)
    print(f"{label:<28}{median * 1000:>8.0f} ms{p90 * 1000:>7.0f} ms{over * 1000:>11.0f} ms{cpu * 1000:>11.0f} ms")


if __name__ == "__main__":
    main()
