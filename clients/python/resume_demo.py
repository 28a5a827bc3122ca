"""A durable three-step job from Python through the MCP SDK: kill it, run it again, it resumes.

    python clients/python/resume_demo.py            # runs the steps not yet done
    python clients/python/resume_demo.py --crash 2  # dies before recording step 2, mid-step

Each run starts its own ``mcp-orchestrator serve`` over stdio on the default store (or
MCP_ORCHESTRATOR_DB), exactly as an agent harness would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from mcp import Client, StdioServerParameters

STEPS = ["fetch", "transform", "publish"]


async def main(crash_at: int | None) -> None:
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_orchestrator", "serve"], env=dict(os.environ)
    )
    async with Client(server) as client:
        started = await client.call_tool("start_run", {"name": "demo", "key": "resume-demo"})
        run = started.structured_content
        run_id = run["run"]["run_id"]
        print(f"run {run_id}: {'new' if run['created'] else 'resumed'}, status {run['run']['status']}")
        if run["run"]["status"] != "running":
            return
        for number, step in enumerate(STEPS, start=1):
            begun = await client.call_tool("checkpoint", {"run_id": run_id, "step": step, "begin": True})
            result = begun.structured_content
            if result["replayed"]:
                print(f"  {step}: done before, output {result['step']['output']!r}")
                continue
            if result["previous_outcome"] == "unknown":
                print(f"  {step}: an earlier attempt never reported; checking its effect, then redoing it")
            if crash_at == number:
                print(f"  {step}: crashing mid-step", flush=True)  # os._exit skips the buffers
                os._exit(1)
            output = f"{step} done"
            await client.call_tool("checkpoint", {"run_id": run_id, "step": step, "output": output})
            print(f"  {step}: {output}")
        finished = await client.call_tool("finish_run", {"run_id": run_id, "output": "all steps done"})
        print(f"run {run_id}: {finished.structured_content['run']['status']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crash", type=int, metavar="N", help="die in the middle of step N (1-3)")
    asyncio.run(main(parser.parse_args().crash))
