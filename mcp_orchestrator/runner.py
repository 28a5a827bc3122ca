"""The runner: the small process that owns one attempt of one sub-agent.

``python -m mcp_orchestrator.runner SPEC.json``, started by the supervisor in a session of
its own. It starts the agent first (before importing anything heavy, so that queued-to-running
is quick), in a new process group, with stdout and stderr appended to the run's log files; then
it records the start in the store, heartbeats, kills the group when the run ends elsewhere
(cancel) or the attempt times out, and records the exit with the agent's final output. The
server that launched it may die meanwhile: the runner does not need it.

The agent's stdout comes through a pipe: a thread copies every line to the log file as it
arrives and hands it to the reader of the profile's output format (``agents/streams.py``), so
the harness's session id is recorded the moment it is printed, and its result, its reason for
failing or a usage limit are known at the exit without reading the log back.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agents.streams import StreamReader

LINE_MAX = 8 * 1024 * 1024  # a longer stdout line is logged whole but read only in part


# A launch that failed with one of these may work if tried again (resources ran short for a moment);
# any other failure (no such file, permission denied, exec format error, a NUL in an argument) would
# fail the same way every time, so the run fails at once with the reason.
TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.ETXTBSY, errno.EINTR})


def main(argv: list[str]) -> int:
    with open(argv[1]) as file:
        spec = json.load(file)
    stdout = open(spec["stdout"], "ab")  # noqa: SIM115  (written until the agent exits)
    stderr = open(spec["stderr"], "ab")  # noqa: SIM115
    stderr.write(
        f"--- attempt {spec['attempt']} started {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode()
    )
    stderr.flush()
    started = time.time()
    process: subprocess.Popen[bytes] | None = None
    failure: tuple[str, bool] | None = None
    try:
        process = _start(spec, stderr)
    except Exception as exc:  # every way a launch can fail is reported in the run, never left to be "lost"
        failure = _launch_failure(spec, exc)
        stderr.write(f"--- {failure[0]}\n".encode(errors="replace"))
        stderr.flush()

    import asyncio

    from .agents.streams import reader_for

    reader = reader_for(spec["output"])
    copied = threading.Event()  # stdout ended (the agent and whatever it left behind closed it)
    news = threading.Event()  # the reader learned something to record at once (the session id)
    if process is not None and process.stdout is not None:
        pipe = process.stdout
        threading.Thread(target=_copy, args=(pipe, stdout, reader, news, copied), daemon=True).start()
    else:
        copied.set()
    return asyncio.run(_attend(spec, process, started, failure, reader, news, copied))


def _start(spec: dict[str, Any], stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start the agent in a process group of its own, its prompt (if any) fed to stdin by a thread."""
    data = None if spec["stdin"] is None else spec["stdin"].encode()
    process = subprocess.Popen(
        spec["argv"],
        cwd=spec["cwd"],
        env={**os.environ, **spec["env"]},
        stdin=subprocess.DEVNULL if data is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,  # a group of its own: killing it never kills the runner
    )
    if process.stdin is not None and data is not None:
        threading.Thread(target=_feed, args=(process.stdin, data), daemon=True).start()
    return process


def _launch_failure(spec: dict[str, Any], exc: Exception) -> tuple[str, bool]:
    """Why the agent could not be started, and whether trying again may help."""
    program = spec["argv"][0] if spec["argv"] else "(an empty argv)"
    if isinstance(exc, FileNotFoundError) and exc.filename in (None, program):
        from .profiles import harness_missing

        path = spec["env"].get("PATH", os.environ.get("PATH", os.defpath))
        if (missing := harness_missing(spec.get("profile", "?"), program, spec["cwd"], path)) is not None:
            return missing, False
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename not in (None, program) else ""
        reason = f"{exc.strerror or exc}{where}"
        retry = exc.errno in TRANSIENT_ERRNOS
    else:
        reason, retry = f"{type(exc).__name__}: {exc}", False
    return f"cannot start {program!r:.200} in {spec['cwd']!r:.200}: {reason}", retry


def _copy(
    pipe: IO[bytes], log: IO[bytes], reader: StreamReader, news: threading.Event, copied: threading.Event
) -> None:
    """Copy the agent's stdout to its log line by line, reading each (a line over LINE_MAX is read
    in pieces: logged whole, parsed as pieces that a JSON reader skips)."""
    try:
        while line := pipe.readline(LINE_MAX):
            log.write(line)
            log.flush()  # `agents logs --follow` shows it now
            session = reader.report.session_id
            reader.feed(line.rstrip(b"\r\n"))
            if reader.report.session_id != session:
                news.set()
    except (OSError, ValueError) as exc:  # the log's disk is full, say: the agent must not block on a full pipe
        with contextlib.suppress(OSError, ValueError):
            log.write(f"\n--- the runner stopped copying stdout: {exc}\n".encode())
        while pipe.read(65536):
            pass
    finally:
        copied.set()


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
    failure: tuple[str, bool] | None,
    reader: StreamReader,
    news: threading.Event,
    copied: threading.Event,
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
        recorded: str | None = None
        while verdict == "continue":
            heard = asyncio.ensure_future(asyncio.to_thread(news.wait, settings.agents.heartbeat_s))
            done, _ = await asyncio.wait({exit_code, heard}, timeout=settings.agents.heartbeat_s)
            if (session := reader.report.session_id) is not None and session != recorded:
                news.clear()
                recorded = session
                verdict = await agents.session_started(run_id, attempt, session)
            if exit_code in done or verdict != "continue":
                break
            if heard not in done or not heard.result():
                verdict = await agents.heartbeat(run_id, attempt)
        how: ExitHow = "exited"
        if not exit_code.done():
            how = "timed_out" if verdict == "timeout" else "stopped"
        if how != "exited" or group_alive(process.pid):  # the agent's group ends with it
            await asyncio.to_thread(kill_group, process.pid, settings.agents.kill_grace_s)
        code = await exit_code
        await asyncio.to_thread(copied.wait, 5.0)  # the last lines (a child that kept stdout open was killed)
        report = reader.finish()
        why: str | None = None
        if how == "timed_out":
            why = "the attempt ran past its timeout; its process group was killed"
        elif code != 0 or report.error is not None:
            why = report.error or _exit_words(code, tail_lines(Path(spec["stderr"]), 5))
        await agents.exited(
            run_id,
            attempt,
            code,
            how=how,
            output=report.output,
            session_id=report.session_id,
            message=why,
            limit=None if how != "exited" else report.limit,
        )
    return 0


def _exit_words(code: int, stderr_tail: list[str]) -> str:
    """Why a process that said nothing structured failed: its exit and the end of its stderr."""
    why = f"exited with code {code}" if code > 0 else f"killed by signal {-code}"
    last = [line for line in stderr_tail if line.strip() and not line.startswith("--- attempt ")]
    return why + (": " + " | ".join(last) if last else "")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
