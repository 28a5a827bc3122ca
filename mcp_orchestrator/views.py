"""How runs, steps, schedules and processes read as text, written once for the CLI and the dashboard.

The two faces show the same facts a little differently (the terminal marks UTC times with ``Z``,
shows a missing value as ``null``, says more about a process); ``terminal=True`` selects the
terminal's way, so each face keeps the exact output it has always had. What sub-agents spend and
do (costs, tokens, budgets, activity, silence) reads the same in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import short_json
from .models import Activity, Agent, Run, RunStatus, Schedule, Usage

if TYPE_CHECKING:
    from .runtime import Engine

ACTIVITY_PAGE = 1000  # entries one status read returns at most (StatusInput.activity_limit)


def when(value: datetime | None, *, terminal: bool = False) -> str:
    """A stored time to the second, or nothing; the terminal marks it UTC with a ``Z``."""
    if value is None:
        return ""
    return value.strftime("%Y-%m-%d %H:%M:%SZ" if terminal else "%Y-%m-%d %H:%M:%S")


def duration(started: datetime, ended: datetime | None) -> str:
    """How long a step took, in ms under a second; nothing while it has not ended."""
    if ended is None:
        return ""
    seconds = (ended - started).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def brief(value: Any, limit: int = 60, *, terminal: bool = False) -> str:
    """A value as one short line of JSON (a string as itself), cut at ``limit`` characters with ``…``.

    A missing value is blank on a page; the terminal shows it as ``null``, which a table cell can't
    confuse with an empty string.
    """
    return "" if value is None and not terminal else short_json(value, limit, ensure_ascii=False)


def whole(value: Any) -> str:
    """A value as one line of JSON (a string as itself), uncut: what a person must read in full,
    such as the error that ended a run."""
    return short_json(value, None, ensure_ascii=False)


def schedule_timing(schedule: Schedule, *, terminal: bool = False) -> str:
    """When a schedule fires: its cron and time zone, its interval, or its one time."""
    if schedule.cron:
        return f"{schedule.cron} {schedule.timezone}" if terminal else f"{schedule.cron} ({schedule.timezone})"
    if schedule.every_s:
        return f"every {schedule.every_s:g}s" if terminal else f"every {schedule.every_s:g} s"
    return f"at {when(schedule.at, terminal=True)}" if terminal else f"at {schedule.at}"


def process_facts(process: Agent, *, terminal: bool = False, silent_s: float | None = None) -> list[str]:
    """What a sub-agent's process is doing, as short phrases to join with commas; ``silent_s``: how
    long it has been silent past the config's ``silent_after_s`` (``Subagents.silent_for``), if it has.

    The page names the worktree here; the terminal prints it on a line of its own, and adds the
    process's times (a page shows those in the run's journal).
    """
    attempts = f"attempt {process.attempt} of up to {process.max_attempts}"
    paused = []
    if process.paused_until is not None and process.state in ("queued", "idle"):
        paused = [
            f"paused: {process.paused_reason or 'usage limit'} until {when(process.paused_until, terminal=terminal)}"
        ]
    paused += [silence(silent_s)] if silent_s is not None else []
    if not terminal:
        facts = [process.profile, str(process.state), *paused, attempts]
        if process.pid:
            facts.append(f"pid {process.pid} (group {process.pgid}) on {process.host or ''}")
        if process.exited_at:
            facts.append(f"exit {process.exit_code}")
        if process.worktree:
            facts.append(f"worktree {process.worktree} ({process.branch or ''})")
        return facts
    facts = [process.profile, attempts, str(process.state), *paused]
    if process.pid is not None:
        facts.append(f"runner pid {process.pid}, group {process.pgid} on {process.host}")
    if process.started_at is not None:
        facts.append(f"started {when(process.started_at, terminal=True)}")
    if process.exited_at is not None:
        facts.append(f"exit {process.exit_code} at {when(process.exited_at, terminal=True)}")
    elif process.heartbeat_at is not None:
        facts.append(f"heartbeat {when(process.heartbeat_at, terminal=True)}")
    if process.start_after is not None and process.state == "queued" and not paused:
        facts.append(f"retry after {when(process.start_after, terminal=True)}")
    return facts


# What sub-agents spend: the same figures in the same words on a page and in a terminal.


def cost(usd: float | None) -> str:
    """Dollars as a bill shows them: four decimals under $10 (agents spend cents), two above; '-' for none."""
    if usd is None:
        return "-"
    return f"${usd:.4f}" if usd < 10 else f"${usd:,.2f}"


def tokens(count: int) -> str:
    """A token count in a few characters: 950, 12.3k, 4.1M."""
    if count < 1000:
        return str(count)
    if count < 999_950:
        return f"{count / 1000:.1f}k"
    return f"{count / 1_000_000:.1f}M"


def spent(usage: Usage | None) -> str:
    """What a run (or its tree) spent in one short cell: its cost, else its tokens (a harness that
    prices nothing), else '-'."""
    if usage is None or (usage.cost_usd <= 0 and usage.tokens <= 0):
        return "-"
    return cost(usage.cost_usd) if usage.cost_usd > 0 else f"{tokens(usage.tokens)} tokens"


def usage_words(usage: Usage | None) -> str:
    """All of a usage in one line: cost, tokens (in, out, cached), turns and model; '' for none."""
    if usage is None:
        return ""
    parts = [cost(usage.cost_usd)] if usage.cost_usd > 0 else []
    if usage.tokens:
        parts.append(token_words(usage))
    if usage.turns:
        parts.append(f"{usage.turns} turn{'s' if usage.turns != 1 else ''}")
    if usage.model:
        parts.append(usage.model)
    return ", ".join(parts)


def token_words(usage: Usage) -> str:
    """'12.3k tokens (10.0k in, 2.1k out, 200 cached)'."""
    cached = usage.cache_read_tokens + usage.cache_write_tokens
    split = f"{tokens(usage.input_tokens)} in, {tokens(usage.output_tokens)} out"
    return f"{tokens(usage.tokens)} tokens ({split}{f', {tokens(cached)} cached' if cached else ''})"


def budget_words(run: Run) -> str:
    """A run's budget against what it spent: 'spent $0.0420 of $0.5000, 3 of 40 turns'; '' without one."""
    if run.budget is None:
        return ""
    parts = []
    if run.budget.max_budget_usd is not None:
        used = run.tree_usage.cost_usd if run.tree_usage else 0.0
        parts.append(f"spent {cost(used)} of {cost(run.budget.max_budget_usd)}")
    if run.budget.max_turns is not None:
        parts.append(f"{run.usage.turns if run.usage else 0} of {run.budget.max_turns} turns")
    return ", ".join(parts)


def paused_at_budget(run: Run, waits: Sequence[Any]) -> bool:
    """Whether the run waits for its budget to be raised (a wait of kind 'budget')."""
    return run.status == RunStatus.WAITING and any(wait.kind == "budget" for wait in waits)


# What sub-agents do: one activity entry, and silence.


def milliseconds(ms: int) -> str:
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def activity_text(entry: Activity) -> str:
    """What happened, in the entry's one line (a tool call's names its tool)."""
    if entry.tool and not entry.summary.startswith(entry.tool):
        return f"{entry.tool}: {entry.summary}"
    return entry.summary


def activity_outcome(entry: Activity) -> str:
    """How a tool call (or a result) went: 'running', 'ok, 1.2 s', 'failed, 340 ms'; '' for the rest."""
    if entry.failed is None:
        return "running" if entry.kind == "tool" else ""
    took = f", {milliseconds(entry.duration_ms)}" if entry.duration_ms is not None else ""
    return ("failed" if entry.failed else "ok") + took


def activity_line(entry: Activity, *, terminal: bool = False) -> str:
    """One entry as a line of a timeline: time, attempt, kind, what, outcome."""
    outcome = activity_outcome(entry)
    attempt = f"#{entry.attempt}" if entry.attempt is not None else "-"
    line = f"{when(entry.at, terminal=terminal)}  {attempt:<3} {entry.kind:<10} {activity_text(entry)}"
    return f"{line}  [{outcome}]" if outcome else line


def silence(seconds: float) -> str:
    """How long a sub-agent has shown no activity: 'silent for 12 min'."""
    if seconds < 60:
        return f"silent for {seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"silent for {minutes} min" if minutes < 120 else f"silent for {minutes // 60} h {minutes % 60} min"


# Reading what the faces show, where it takes more than one call of a service.


async def silences(engine: Engine, runs: Sequence[Run]) -> dict[str, float]:
    """How long each running sub-agent among ``runs`` has been silent, for those past the config's
    ``silent_after_s`` (a run list's flag)."""
    listed = {run.run_id for run in runs}
    return {run_id: seconds for run_id, seconds in (await engine.subagents.silences()).items() if run_id in listed}
