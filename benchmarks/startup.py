"""How long the console script takes to answer: ``--version``, ``token`` and ``runs``, each a fresh process,
beside ``python -c pass`` (the interpreter's own start) measured in the same run; and how long ``serve`` over
stdio takes from launch to answering ``tools/list`` (as Claude Code starts one per session and one per
sub-agent), beside a bare MCP server on the same SDK with one tool (target: within 1.15x).

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
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import percentile

COMMANDS = (["--version"], ["token"], ["runs"])


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
        print(f"{'command':<28}{'median':>10}{'p90':>10}{'over python':>14}")
        _line("python -c pass", baseline, baseline)
        for command in COMMANDS:
            argv = [sys.executable, "-c", script, *command]
            subprocess.run(argv, env=env, check=True, capture_output=True)  # the token and the store exist after
            _line(f"mcp-orchestrator {' '.join(command)}", _times(argv, env, args.n), baseline)
        bare_script = Path(home) / "bare_server.py"
        bare_script.write_text(BARE_SERVER)
        bare = _serve_times([sys.executable, str(bare_script)], env, args.n)
        serve = _serve_times([sys.executable, "-m", "mcp_orchestrator", "serve"], env, args.n)
        print(f"\n{'launch to tools/list (stdio)':<28}{'median':>10}{'p90':>10}")
        for label, times in (("bare SDK server (baseline)", bare), ("mcp-orchestrator serve", serve)):
            print(f"{label:<28}{percentile(times, 0.5) * 1000:>8.0f} ms{percentile(times, 0.9) * 1000:>7.0f} ms")
        ratio = percentile(serve, 0.5) / percentile(bare, 0.5)
        print(f"serve / bare: {ratio:.2f}x (target 1.15x: {'meets' if ratio <= 1.15 else 'ABOVE'})")


BARE_SERVER = """
from mcp.server import MCPServer

server = MCPServer("bare", log_level="WARNING")


@server.tool()
async def noop(run_id: str, step: str) -> str:
    \"\"\"Do nothing.\"\"\"
    return step


server.run()
"""


def _serve_times(argv: list[str], env: dict[str, str], n: int) -> list[float]:
    """Wall seconds from launching an MCP server over stdio to its answer to tools/list, ``n`` times."""
    from mcp import Client, StdioServerParameters

    async def once() -> float:
        start = time.perf_counter()
        async with Client(StdioServerParameters(command=argv[0], args=argv[1:], env=env)) as client:
            await client.list_tools()
            return time.perf_counter() - start

    asyncio.run(once())  # the store created, the files cached
    return [asyncio.run(once()) for _ in range(n)]


def _times(argv: list[str], env: dict[str, str], n: int) -> list[float]:
    """Wall seconds of ``n`` fresh runs of ``argv``."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def _line(label: str, times: list[float], baseline: list[float]) -> None:
    median, p90 = percentile(times, 0.5), percentile(times, 0.9)
    over = median - percentile(baseline, 0.5)
    print(f"{label:<28}{median * 1000:>8.0f} ms{p90 * 1000:>7.0f} ms{over * 1000:>11.0f} ms")


if __name__ == "__main__":
    main()
