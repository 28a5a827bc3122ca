"""The runner: the small process that owns one attempt of one sub-agent.

``python -m mcp_orchestrator.runner SPEC.json``, started by the supervisor in a session of
its own. It starts the agent first (before importing anything heavy, so that queued-to-running
is quick), in a new process group, with stdout and stderr appended to the run's log files; then
it records the start in the store, heartbeats, kills the group when the run ends elsewhere
(cancel) or the attempt times out, and records the exit with the agent's final output. The
server that launched it may die meanwhile: the runner does not need it.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from typing import IO, Any

OUTPUT_MAX = 64 * 1024  # the final output kept from stdout, in characters
TAIL_READ = 4 * 1024 * 1024  # at most this much of the end of stdout is read for it


# A launch that failed with one of these may work if tried again (resources ran short for a moment);
# any other failure (no such file, permission denied, exec format error, a NUL in an argument) would
# fail the same way every time, so the run fails at once with the reason.
TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.ETXTBSY, errno.EINTR})


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
    failure: tuple[str, bool] | None = None
    try:
        process = _start(spec, stdout, stderr)
    except Exception as exc:  # every way a launch can fail is reported in the run, never left to be "lost"
        failure = _launch_failure(spec, exc)
        stderr.write(f"--- {failure[0]}\n".encode(errors="replace"))
        stderr.flush()

    import asyncio

    return asyncio.run(_attend(spec, process, started, offset, failure))


def _start(spec: dict[str, Any], stdout: IO[bytes], stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start the agent in a process group of its own, its prompt (if any) fed to stdin by a thread."""
    data = None if spec["stdin"] is None else spec["stdin"].encode()
    process = subprocess.Popen(
        spec["argv"],
        cwd=spec["cwd"],
        env={**os.environ, **spec["env"]},
        stdin=subprocess.DEVNULL if data is None else subprocess.PIPE,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,  # a group of its own: killing it never kills the runner
    )
    if process.stdin is not None and data is not None:
        threading.Thread(target=_feed, args=(process.stdin, data), daemon=True).start()
    return process


def _launch_failure(spec: dict[str, Any], exc: Exception) -> tuple[str, bool]:
    """Why the agent could not be started, and whether trying again may help."""
    program = spec["argv"][0] if spec["argv"] else "(an empty argv)"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename not in (None, program) else ""
        reason = f"{exc.strerror or exc}{where}"
        retry = exc.errno in TRANSIENT_ERRNOS
    else:
        reason, retry = f"{type(exc).__name__}: {exc}", False
    return f"cannot start {program!r:.200} in {spec['cwd']!r:.200}: {reason}", retry


def _feed(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except OSError:  # the agent exited, or closed stdin without reading it
        pass


async def _attend(
    spec: dict[str, Any],
    process: subprocess.Popen[bytes] | None,
    started: float,
    offset: int,
    failure: tuple[str, bool] | None,
) -> int:
    import asyncio
    from datetime import UTC, datetime
    from pathlib import Path

    from .agents.launch import group_alive, kill_group
    from .config import Settings
    from .logs import tail_lines
    from .models import ExitHow
    from .runtime import open_engine

    settings = Settings.load(db=spec["db"], config=spec["config"])
    run_id, attempt = spec["run_id"], spec["attempt"]
    async with open_engine(settings) as engine:
        agents = engine.subagents
        if process is None:
            message, retry = failure or ("the agent was not started", False)
            await agents.exited(run_id, attempt, 127, how="launch_failed", message=message, retry=retry)
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
        how: ExitHow = "exited"
        if not exit_code.done():
            how = "timed_out" if verdict == "timeout" else "stopped"
        if how != "exited" or group_alive(process.pid):  # the agent's group ends with it
            await asyncio.to_thread(kill_group, process.pid, settings.agents.kill_grace_s)
        code = await exit_code
        output, session_id = _final_output(spec, offset)
        why: str | None = None
        if how == "timed_out":
            why = "the attempt ran past its timeout; its process group was killed"
        elif code != 0:
            why = f"exited with code {code}" if code > 0 else f"killed by signal {-code}"
            last = [line for line in tail_lines(Path(spec["stderr"]), 5) if line.strip()]
            if last:
                why += ": " + " | ".join(last)
        await agents.exited(run_id, attempt, code, how=how, output=output, session_id=session_id, message=why)
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
