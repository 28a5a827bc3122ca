"""The runner: the small process that owns one attempt of one sub-agent.

``python -m mcp_orchestrator.agents.runner SPEC.json``, started by the supervisor in a session of
its own. It starts the agent first (before importing anything heavy, so that queued-to-running
is quick), in a new process group, with stdout and stderr appended to the run's log files; then
it records the start in the store, heartbeats, kills the group when the run ends elsewhere
(cancel) or the attempt times out, and records the exit with the agent's final output. The
server that launched it may die meanwhile: the runner does not need it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import IO, Any

OUTPUT_MAX = 64 * 1024  # the final output kept from stdout, in characters
TAIL_READ = 4 * 1024 * 1024  # at most this much of the end of stdout is read for it


def main(argv: list[str]) -> int:
    with open(argv[1]) as file:
        spec = json.load(file)
    stdout = open(spec["stdout"], "ab")  # noqa: SIM115  (the agent writes into them until it exits)
    stderr = open(spec["stderr"], "ab")  # noqa: SIM115
    offset = stdout.tell()
    stderr.write(
        f"--- attempt {spec['attempt']} started {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode()
    )
    stderr.flush()
    started = time.time()
    process: subprocess.Popen[bytes] | None = None
    error = None
    try:
        process = subprocess.Popen(
            spec["argv"],
            cwd=spec["cwd"],
            env={**os.environ, **spec["env"]},
            stdin=subprocess.DEVNULL if spec["stdin"] is None else subprocess.PIPE,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # a group of its own: killing it never kills the runner
        )
    except OSError as exc:
        error = f"cannot start {spec['argv'][0]!r}: {exc.strerror or exc}"
    if process is not None and process.stdin is not None:
        threading.Thread(target=_feed, args=(process.stdin, spec["stdin"].encode()), daemon=True).start()

    import asyncio

    return asyncio.run(_attend(spec, process, started, offset, error))


def _feed(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except OSError:  # the agent exited, or closed stdin without reading it
        pass


async def _attend(
    spec: dict[str, Any], process: subprocess.Popen[bytes] | None, started: float, offset: int, error: str | None
) -> int:
    import asyncio
    from datetime import UTC, datetime
    from pathlib import Path

    from ..config import Settings
    from ..logs import tail_lines
    from ..runtime import open_engine
    from .launch import group_alive, kill_group

    settings = Settings.load(db=spec["db"], config=spec["config"])
    run_id, attempt = spec["run_id"], spec["attempt"]
    async with open_engine(settings) as engine:
        agents = engine.subagents
        if process is None:
            await agents.exited(run_id, attempt, 127, how="launch_failed", message=error)
            return 1
        at = datetime.fromtimestamp(started, UTC)
        log_dir = str(Path(spec["stdout"]).parent)
        verdict = await agents.started(
            run_id, attempt, pid=os.getpid(), pgid=process.pid, host=spec["node"], at=at, log_dir=log_dir
        )
        exit_code = asyncio.ensure_future(asyncio.to_thread(process.wait))
        while verdict == "continue":
            done, _ = await asyncio.wait({exit_code}, timeout=settings.agents.heartbeat_s)
            if done:
                break
            verdict = await agents.heartbeat(run_id, attempt)
        how = "exited"
        if not exit_code.done():
            how = "timed_out" if verdict == "timeout" else "stopped"
        if how != "exited" or group_alive(process.pid):  # the agent's group ends with it
            await asyncio.to_thread(kill_group, process.pid, settings.agents.kill_grace_s)
        code = await exit_code
        output, session_id = _final_output(spec, offset)
        message = None
        if how == "timed_out":
            message = "the attempt ran past its timeout; its process group was killed"
        elif code != 0:
            message = f"exited with code {code}" if code > 0 else f"killed by signal {-code}"
            last = [line for line in tail_lines(Path(spec["stderr"]), 5) if line.strip()]
            if last:
                message += ": " + " | ".join(last)
        await agents.exited(run_id, attempt, code, how=how, output=output, session_id=session_id, message=message)
    return 0


def _final_output(spec: dict[str, Any], offset: int) -> tuple[Any, str | None]:
    """The agent's final output and, for Claude Code's JSON, its session id, from this attempt's stdout."""
    with open(spec["stdout"], "rb") as file:
        size = file.seek(0, 2)
        file.seek(max(offset, size - TAIL_READ))  # the end is what matters; a huge log is not read whole
        text = file.read().decode(errors="replace").strip()
    if spec["output"] == "claude-json":
        for candidate in [text, *reversed(text.splitlines())]:
            try:
                document = json.loads(candidate)
            except ValueError:
                continue
            if isinstance(document, dict) and ("result" in document or "session_id" in document):
                result = document.get("result")
                return (result[-OUTPUT_MAX:] if isinstance(result, str) else result), document.get("session_id")
    return (text[-OUTPUT_MAX:] or None), None


if __name__ == "__main__":
    sys.exit(main(sys.argv))
