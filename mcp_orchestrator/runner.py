"""The runner: the small process that owns one attempt of one sub-agent.

Forked by the launcher (``python -m mcp_orchestrator.runner --launcher``, a child of the supervisor
that imported the engine once: see ``serve_launches``), or started as ``python -m
mcp_orchestrator.runner SPEC.json``, in a session of its own. It starts the agent first (before
importing anything heavy, so that queued-to-running is quick, however it was started), in a new
process group, with stdout and stderr appended to the run's log files; then it records the start in
the store, reports once a heartbeat, kills the group when the run ends elsewhere (cancel), the
attempt times out, the run's budget is spent or the agent stays silent too long, and records the
exit with the agent's final output. The server that launched it may die meanwhile: the runner does
not need it.

The agent's stdout comes through a pipe: a thread copies every line to the log file as it
arrives and hands it to the reader of the profile's output format (``agents/streams.py``), so
the harness's session id is recorded the moment it is printed, and its result, its reason for
failing or a usage limit are known at the exit without reading the log back. What the reader
gathers on the way (activity: turns, tool calls, texts; usage and cost so far) goes to the store
with the heartbeat, in one write: however busy the agent, watching it costs one write a heartbeat.

Live input (the profile's ``input`` is ``claude-stream-json``: ``claude -p --input-format
stream-json``): the agent's stdin stays open. The first prompt is its first user line; messages
sent to the run come back in the heartbeat's answer and are written as further user lines at once,
by a thread of their own, so a full pipe never holds up the heartbeat. Once the agent has answered
(a result line) since the last line written and a heartbeat brought nothing new, stdin is closed:
Claude Code then ends its session and exits, as ``-p`` does with a prompt.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    from pathlib import Path

    from .agents.streams import StreamReader
    from .models import ExitHow, Message
    from .services.subagents import Subagents, Verdict

LINE_MAX = 8 * 1024 * 1024  # a longer stdout line is logged whole but read only in part
LIVE_INPUT = "claude-stream-json"  # the spec's `input` whose stdin stays open for more user lines

# A launch that failed with one of these may work if tried again (resources ran short for a moment);
# any other failure (no such file, permission denied, exec format error, a NUL in an argument) would
# fail the same way every time, so the run fails at once with the reason.
TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.ETXTBSY, errno.EINTR})

# A verdict other than "continue" kills the agent's group; how its exit is then recorded, and why.
KILLED_HOW: dict[str, ExitHow] = {"stop": "stopped", "timeout": "timed_out", "budget": "budget", "silent": "silent"}
KILLED_WHY = {
    "timed_out": "the attempt ran past its timeout; its process group was killed",
    "budget": "the run reached its budget; its process group was killed",
    "silent": "the agent showed no activity for too long; its process group was killed",
}


def main(argv: list[str]) -> int:
    if argv[1:] == ["--launcher"]:  # agents.launch.LAUNCHER_FLAG
        return serve_launches(sys.stdin.buffer, sys.stdout.buffer)
    return run(argv[1])


def run(spec_path: str) -> int:
    """Run the attempt that the spec at ``spec_path`` describes, to its end."""
    with open(spec_path) as file:
        spec = json.load(file)
    stdout = open(spec["stdout"], "ab")  # noqa: SIM115  (written until the agent exits)
    stderr = open(spec["stderr"], "ab")  # noqa: SIM115
    stderr.write(
        f"--- attempt {spec['attempt']} started {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode()
    )
    stderr.flush()
    live = spec.get("input", "text") == LIVE_INPUT
    started = time.time()
    process: subprocess.Popen[bytes] | None = None
    failure: tuple[str, bool] | None = None
    try:
        process = _start(spec, stderr, live)
    except Exception as exc:  # every way a launch can fail is reported in the run, never left to be "lost"
        failure = _launch_failure(spec, exc)
        stderr.write(f"--- {failure[0]}\n".encode(errors="replace"))
        stderr.flush()

    import asyncio

    from .agents.streams import reader_for

    reader = reader_for(spec["output"])
    news = News()
    copied = threading.Event()  # stdout ended (the agent and whatever it left behind closed it)
    stdin: LiveInput | None = None
    if process is not None:
        if live and process.stdin is not None:
            stdin = LiveInput(process.stdin, lambda: reader.report.results)
            if spec["stdin"] is not None:
                stdin.send(None, spec["stdin"])
        start_copying(process, stdout, reader, news, copied)
    else:
        copied.set()
    return asyncio.run(_attend(spec, process, started, failure, reader, news, copied, stdin))


def _start(spec: dict[str, Any], stderr: IO[bytes], live: bool) -> subprocess.Popen[bytes]:
    """Start the agent in a process group of its own. Its prompt (if any) is fed to stdin by a thread,
    which then closes it; with live input, stdin stays open for the runner's user lines."""
    data = None if spec["stdin"] is None else spec["stdin"].encode()
    process = subprocess.Popen(
        spec["argv"],
        cwd=spec["cwd"],
        env={**os.environ, **spec["env"]},
        stdin=subprocess.PIPE if live or data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,  # a group of its own: killing it never kills the runner
    )
    if not live and process.stdin is not None and data is not None:
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


def _feed(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except OSError:  # the agent exited, or closed stdin without reading it
        pass


# The launcher.


def serve_launches(requests: IO[bytes], answers: IO[bytes]) -> int:
    """The launcher: imports what attending an agent needs once (then says ``{"ready": true}``),
    then forks a runner for each spec path it reads (a JSON string a line), answering each with
    ``{"pid": ...}`` or ``{"error": ..., "errno": ...}``. A forked runner starts its agent within
    milliseconds and imports nothing, so no import's CPU slows the other runners' handovers. It ends
    with its input (its supervisor closed it, or died); its runners live on, in sessions of their own."""
    # What a runner imports once its agent started (``run``, ``_attend``, the engine's sub-agents service,
    # reading the config file, ``asyncio.to_thread``): imported here once, for every runner.
    import asyncio  # noqa: F401
    import concurrent.futures.thread  # noqa: F401
    import gc
    import tomllib  # noqa: F401

    from . import logs, models, runtime  # noqa: F401
    from .agents import launch, streams  # noqa: F401
    from .services import subagents  # noqa: F401

    models.build_models()  # built at first use elsewhere; built here, they are shared with every runner

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C stops the supervisor, which ends the input
    signal.signal(signal.SIGCHLD, _reap)
    gc.freeze()  # the imported objects stay shared with the runners: no collection writes to their pages
    answers.write(b'{"ready": true}\n')
    answers.flush()
    while line := requests.readline():
        try:
            answer: dict[str, Any] = {"pid": _fork(json.loads(line))}
        except OSError as exc:
            answer = {"error": exc.strerror or str(exc), "errno": exc.errno}
        answers.write(json.dumps(answer).encode() + b"\n")
        answers.flush()
    return 0


def _reap(signum: int, frame: object) -> None:
    """Reap the launcher's runners that ended: none lingers as a zombie."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _fork(spec_path: str) -> int:
    """Fork the runner of a spec, as ``agents.launch.start_runner`` starts one: a session of its own, in
    the spec's directory, stdin and stdout closed, stderr appended to ``runner.log`` there."""
    run_dir = os.path.dirname(spec_path)
    log = os.open(os.path.join(run_dir, "runner.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        pid = os.fork()
    except OSError:
        os.close(log)
        raise
    if pid:
        os.close(log)
        return pid
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the runner waits for its agent itself
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in any interpreter
        os.setsid()
        os.chdir(run_dir)
        null = os.open(os.devnull, os.O_RDWR)
        for fd, target in ((null, 0), (null, 1), (log, 2)):
            os.dup2(fd, target)
        os.close(null)
        os.close(log)
        code = run(spec_path)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# Reading stdout.


class News:
    """Raised by the copy thread when the reader learned something to act on at once (a session id,
    a result); the event loop awaits it. Raised before the loop is bound, it is kept until then."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._raised = False
        self._wake: Callable[[], object] | None = None

    def raise_(self) -> None:
        with self._lock:
            self._raised = True
            wake = self._wake
        if wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
                wake()

    def bind(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        """From now on news sets ``event`` (in ``loop``)."""
        with self._lock:
            self._wake = lambda: loop.call_soon_threadsafe(event.set)
            if self._raised:
                event.set()


def start_copying(
    process: subprocess.Popen[bytes], log: IO[bytes], reader: StreamReader, news: News, copied: threading.Event
) -> None:
    """Copy the agent's stdout to its log and its reader in a thread; ``copied`` is set when stdout ends."""
    if process.stdout is None:
        copied.set()
        return
    threading.Thread(target=_copy, args=(process.stdout, log, reader, news, copied), daemon=True).start()


def _copy(pipe: IO[bytes], log: IO[bytes], reader: StreamReader, news: News, copied: threading.Event) -> None:
    """Copy the agent's stdout to its log line by line, reading each (a line over LINE_MAX is read
    in pieces: logged whole, parsed as pieces that a JSON reader skips)."""
    try:
        while line := pipe.readline(LINE_MAX):
            log.write(line)
            log.flush()  # `agents logs --follow` shows it now
            session, results = reader.report.session_id, reader.report.results
            reader.feed(line.rstrip(b"\r\n"))
            if reader.report.session_id != session or reader.report.results != results:
                news.raise_()
    except (OSError, ValueError) as exc:  # the log's disk is full, say: the agent must not block on a full pipe
        with contextlib.suppress(OSError, ValueError):
            log.write(f"\n--- the runner stopped copying stdout: {exc}\n".encode())
        while pipe.read(65536):
            pass
    finally:
        copied.set()


# Writing stdin (live input).


def user_line(text: str) -> bytes:
    """One stream-json user message (``claude -p --input-format stream-json``), newline-terminated."""
    message = {"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": text}]}}
    return json.dumps(message).encode() + b"\n"


class LiveInput:
    """The agent's stdin, kept open for user lines. A thread of its own writes them, so that a full pipe
    (an agent deep in a long turn) never holds up the heartbeat; once a write fails (the agent is gone)
    nothing more is written, and what was not written is not reported delivered."""

    def __init__(self, pipe: IO[bytes], results: Callable[[], int]) -> None:
        self._pipe = pipe
        self._results = results  # how many result lines the agent printed so far
        self._lines: queue.SimpleQueue[tuple[str | None, str] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._sent: set[str] = set()  # message ids handed to the writer: none is written twice
        self._pending = 0  # lines handed to the writer and not yet written
        self._written: list[str] = []  # message ids written since the last take
        self._results_before_last = 0  # results printed before the last line was written
        self.closed = False  # closed by the runner, or broken
        threading.Thread(target=self._write_all, daemon=True).start()

    def is_new(self, message_id: str) -> bool:
        return message_id not in self._sent

    def send(self, message_id: str | None, text: str) -> None:
        """Write a user line (a message's, or the first prompt without an id), unless stdin is closed or
        the message was sent before."""
        with self._lock:
            if self.closed or message_id in self._sent:
                return
            if message_id is not None:
                self._sent.add(message_id)
            self._pending += 1
        self._lines.put((message_id, text))

    def answered(self) -> bool:
        """Whether the agent printed a result since the last line was written, and nothing waits to be."""
        with self._lock:
            return not self.closed and self._pending == 0 and self._results() > self._results_before_last

    def close(self) -> None:
        """End the input once the lines handed over are written: the agent finishes its session."""
        with self._lock:
            self.closed = True
        self._lines.put(None)

    def take_written(self) -> list[str]:
        """The ids of the messages written since the last take."""
        with self._lock:
            written, self._written = self._written, []
        return written

    def _write_all(self) -> None:
        while (line := self._lines.get()) is not None:
            message_id, text = line
            # Counted before the write: a result printed in between answers an earlier line, and closing
            # early is harmless (the agent still answers what it has read), while waiting for a result
            # that already came would keep it waiting for input until its timeout.
            results = self._results()
            try:
                self._pipe.write(user_line(text))
                self._pipe.flush()
            except (OSError, ValueError):  # the agent is gone, or closed its stdin
                break
            with self._lock:
                self._pending -= 1
                self._results_before_last = results
                if message_id is not None:
                    self._written.append(message_id)
        with self._lock:
            self.closed = True
        with contextlib.suppress(OSError, ValueError):
            self._pipe.close()


# Attending the agent.


async def _attend(
    spec: dict[str, Any],
    process: subprocess.Popen[bytes] | None,
    started: float,
    failure: tuple[str, bool] | None,
    reader: StreamReader,
    news: News,
    copied: threading.Event,
    stdin: LiveInput | None,
) -> int:
    import asyncio
    from datetime import UTC, datetime
    from pathlib import Path

    from .agents.launch import group_alive, kill_group
    from .config import Settings
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
        watch = Watch(run_id, attempt, agents, reader, stdin, settings.agents.heartbeat_s)
        if verdict == "continue":
            verdict = await watch.until_exit(exit_code, news)
        how: ExitHow = "exited" if exit_code.done() else KILLED_HOW.get(verdict, "stopped")
        if how != "exited" or group_alive(process.pid):  # the agent's group ends with it
            await asyncio.to_thread(kill_group, process.pid, settings.agents.kill_grace_s)
        code = await exit_code
        await asyncio.to_thread(copied.wait, 5.0)  # the last lines (a child that kept stdout open was killed)
        await watch.exited(code, how, Path(spec["stderr"]))
    return 0


class Watch:
    """The runner's reports on one attempt: a batch once a heartbeat (what the reader gathered, the
    messages written), the session id at once, and the exit; and, with live input, the user lines."""

    def __init__(
        self,
        run_id: str,
        attempt: int,
        agents: Subagents,
        reader: StreamReader,
        stdin: LiveInput | None,
        heartbeat_s: float,
    ) -> None:
        self.run_id, self.attempt = run_id, attempt
        self.agents = agents
        self.reader = reader
        self.stdin = stdin
        self.heartbeat_s = heartbeat_s
        self.session: str | None = None  # the session id recorded

    async def until_exit(self, exit_code: asyncio.Future[int], news: News) -> Verdict:
        """Report until the agent exits (the verdict is then "continue") or a verdict says to stop it:
        once a heartbeat, and at once when the agent answered live input (its stdin may close now)."""
        import asyncio

        heard = asyncio.Event()
        news.bind(asyncio.get_running_loop(), heard)
        due = time.monotonic() + self.heartbeat_s  # the start counted as a beat
        verdict: Verdict = "continue"
        while verdict == "continue":
            waiter: asyncio.Future[Any] = asyncio.ensure_future(heard.wait())
            done, _ = await asyncio.wait(
                [exit_code, waiter], timeout=max(0.0, due - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            heard.clear()  # before looking: news that comes after is seen on the next turn
            if (session := self.reader.report.session_id) is not None and session != self.session:
                self.session = session
                verdict = await self.agents.session_started(self.run_id, self.attempt, session)
            if exit_code in done or verdict != "continue":
                break
            if time.monotonic() >= due or (self.stdin is not None and self.stdin.answered()):
                verdict = await self.report()
                due = time.monotonic() + self.heartbeat_s
        return verdict

    async def report(self) -> Verdict:
        """One heartbeat with everything new since the last; writes the messages it brings back."""
        activity, dropped = self.reader.take_activity()
        progress = self.reader.report
        beat = await self.agents.report(
            self.run_id,
            self.attempt,
            activity=activity,
            dropped=dropped,
            usage=progress.spent,
            active_at=progress.active_at,
            delivered=self._delivered(),
            live_input=self.stdin is not None and not self.stdin.closed,
        )
        if self.stdin is not None and beat.verdict == "continue":
            self._steer(self.stdin, beat.messages)
        return beat.verdict

    def _steer(self, stdin: LiveInput, messages: Sequence[Message]) -> None:
        """Write the beat's new messages; with none, close stdin once the agent answered the last line."""
        fresh = [message for message in messages if stdin.is_new(message.message_id)]
        for message in fresh:
            stdin.send(message.message_id, message.text)
        if not fresh and stdin.answered():
            stdin.close()

    def _delivered(self) -> list[str]:
        return self.stdin.take_written() if self.stdin is not None else []

    async def exited(self, code: int, how: ExitHow, stderr: Path) -> None:
        """Record the exit with the final output, usage and the last batch (stdout has ended by now)."""
        from .logs import tail_lines

        report = self.reader.finish()
        activity, dropped = self.reader.take_activity()
        why: str | None = KILLED_WHY.get(how)
        if why is None and (code != 0 or report.error is not None):
            why = report.error or _exit_words(code, tail_lines(stderr, 5))
        await self.agents.exited(
            self.run_id,
            self.attempt,
            code,
            how=how,
            output=report.output,
            session_id=report.session_id,
            message=why,
            limit=None if how != "exited" else report.limit,
            usage=report.spent,
            stopped_by=report.stopped_by,
            activity=activity,
            dropped=dropped,
            delivered=self._delivered(),
        )


def _exit_words(code: int, stderr_tail: list[str]) -> str:
    """Why a process that said nothing structured failed: its exit and the end of its stderr."""
    why = f"exited with code {code}" if code > 0 else f"killed by signal {-code}"
    last = [line for line in stderr_tail if line.strip() and not line.startswith("--- attempt ")]
    return why + (": " + " | ".join(last) if last else "")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
