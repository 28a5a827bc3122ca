"""The vocabulary shared by the engine, the store and every face.

Inputs are validated here once (pydantic) for MCP, HTTP and CLI alike; their field descriptions
are what a model reads in the tool schemas, so they are written for it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

from .permissions import parse_rule

NAME_MAX = 200
STEP_MAX = 200
KEY_MAX = 200
LABELS_MAX = 32
LABEL_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$"
LABEL_VALUE_MAX = 200
LIST_LIMIT_MAX = 200
SCHEDULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"

# Arrays and objects nested in each other, at most, in any JSON value a caller gives. Stored values
# come back wrapped in a few more levels (a wait's output holds the event, a status holds the
# step, a journal entry holds the error), and every reader must still take them: pydantic's JSON
# reader stops at 200 levels, Python's json module near 1000. 64 leaves room for any wrapping.
JSON_DEPTH_MAX = 64
# Longer integers cannot even be written as text by Python (sys.int_info.default_max_str_digits).
INT_DIGITS_MAX = 4300
_INT_LIMIT = 10**INT_DIGITS_MAX
# A match path: dotted parts into the event (e.g. 'data.items.0.id'); a list index is ASCII digits.
MATCH_PATH_MAX = 1000
MATCH_PATH_PARTS_MAX = JSON_DEPTH_MAX + 1  # the event's own field, then one part per level of its data
LIST_INDEX = re.compile(r"[0-9]{1,9}")
# Instants a caller gives keep a day away from the ends of the calendar, so converting them to UTC
# and the short durations added to them (grace periods, offsets for display) never overflow.
CALENDAR_MIN, CALENDAR_MAX = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
TIME_MIN, TIME_MAX = CALENDAR_MIN + timedelta(days=1), CALENDAR_MAX - timedelta(days=1)


def text_problem(text: str, *, nul: bool = False) -> str | None:
    """Why ``text`` cannot be stored as it is on both stores, or None.

    A NUL fits in JSON data (both stores keep it escaped, as ``\\u0000``: ``nul=True``) but not in a
    text column: PostgreSQL refuses it there. A lone surrogate fits nowhere: it is not UTF-8."""
    if not nul and "\x00" in text:
        return "holds a NUL character (U+0000), which the stores cannot keep in text; remove it"
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return (
            f"holds a lone surrogate ({text[exc.start]!r} at position {exc.start}), which is not valid Unicode "
            "text; send well-formed UTF-8"
        )
    return None


def _plain_text(value: Any) -> Any:
    if isinstance(value, str) and (problem := text_problem(value)) is not None:
        raise ValueError(problem)
    return value


def _plain_texts(value: Any) -> Any:
    """Text, or a list of texts, checked before a union tries its members (so the error names the field)."""
    for index, item in enumerate(value if isinstance(value, list) else [value]):
        if isinstance(item, str) and (problem := text_problem(item)) is not None:
            raise ValueError(problem if isinstance(value, str) else f"item {index} {problem}")
    return value


def json_problem(value: Any) -> str | None:
    """Why ``value`` is not JSON every store and reader takes, or None; walked without recursion."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth >= JSON_DEPTH_MAX:
                return (
                    f"nests arrays and objects more than {JSON_DEPTH_MAX} levels deep; flatten it, or store "
                    "the data in a file and pass its path"
                )
            if isinstance(item, dict):
                for key in item:
                    if isinstance(key, str) and (problem := text_problem(key, nul=True)) is not None:
                        return f"key {key!r:.60} {problem}"
                pending.extend((child, depth + 1) for child in item.values())
            else:
                pending.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            if (problem := text_problem(item, nul=True)) is not None:
                return f"a string {problem}"
        elif isinstance(item, float) and not math.isfinite(item):
            return f"holds {item}, which JSON cannot carry; send a finite number (or null, or a string)"
        elif isinstance(item, int) and not isinstance(item, bool) and not -_INT_LIMIT < item < _INT_LIMIT:
            return f"holds an integer of more than {INT_DIGITS_MAX} digits; send it as a string"
    return None


def _plain_json(value: Any) -> Any:
    if (problem := json_problem(value)) is not None:
        raise ValueError(problem)
    return value


def _schedule_name(name: str) -> str:
    """A name that is one safe URL path segment as it is (the dashboard and the API address schedules by it)."""
    if not re.fullmatch(SCHEDULE_NAME_PATTERN, name) or ".." in name:
        raise ValueError(
            f"{name!r:.140} is not a schedule name: use 1 to 128 letters, digits and . _ : - (a letter or digit "
            "first, no '..'; no spaces, '/', '?' or '#'), e.g. 'nightly-triage'"
        )
    return name


def _match_path(path: str) -> str:
    """A dotted path into the event, checked where a wait or a cancel trigger is made, not when events arrive."""
    if len(path) > MATCH_PATH_MAX:
        raise ValueError(f"a match path is at most {MATCH_PATH_MAX} characters; this one has {len(path)}")
    parts = path.split(".")
    if len(parts) > MATCH_PATH_PARTS_MAX:
        raise ValueError(f"a match path has at most {MATCH_PATH_PARTS_MAX} dotted parts; this one has {len(parts)}")
    for part in parts:
        if not part:
            raise ValueError(
                f"match path {path!r:.80} has an empty part; write parts joined by single dots, e.g. 'data.pr'"
            )
        if part.isdigit() and not LIST_INDEX.fullmatch(part):
            raise ValueError(
                f"match path {path!r:.80} has the part {part!r:.20}, which looks like a list index but is not one; "
                "a list index is 1 to 9 ASCII digits (e.g. 'data.items.0')"
            )
    return path


def _within(low: datetime, high: datetime) -> Callable[[datetime], datetime]:
    """A check that a time converts to UTC and lies from ``low`` to ``high`` there."""

    def check(value: datetime) -> datetime:
        try:
            utc: datetime | None = value.astimezone(UTC)
        except (OverflowError, ValueError):
            utc = None
        if utc is None or not low <= utc <= high:
            raise ValueError(
                f"{value.isoformat()} is out of range; give a time between {low.date().isoformat()} and "
                f"{high.date().isoformat()} in UTC, e.g. 2026-01-01T09:00:00Z"
            )
        return value

    return check


# Placed after a field's length and pattern constraints (so they stay string constraints, with their
# own messages): `name: Text = Field(max_length=...)` does that; in an alias, put PLAIN_TEXT last, and
# use OptionalText for `| None`, since Field(max_length=...) on `Text | None` would not be.
PLAIN_TEXT = BeforeValidator(_plain_text)
Text = Annotated[str, PLAIN_TEXT]
"""Text a caller gives: no NUL, no lone surrogates (neither store can hold them alike)."""
OptionalText = Annotated[str | None, PLAIN_TEXT]
PLAIN_TEXTS = BeforeValidator(_plain_texts)
Json = Annotated[JsonValue, BeforeValidator(_plain_json)]
"""A JSON value a caller gives: nested at most JSON_DEPTH_MAX deep, finite numbers, plain text."""
MatchPath = Annotated[Text, AfterValidator(_match_path)]
Match = Annotated[dict[MatchPath, Json], Field(max_length=20)]
Instant = Annotated[datetime, AfterValidator(_within(TIME_MIN, TIME_MAX))]
"""A time a caller gives for something to happen: convertible to UTC, a day inside the calendar's range."""
Since = Annotated[datetime, AfterValidator(_within(CALENDAR_MIN, CALENDAR_MAX))]
"""A time a caller filters by: convertible to UTC (0001-01-01T00:00:00Z is 'from the start')."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _unset(value: Any) -> bool:
    return value is None


# On a run, a step or an event shown inside a tool result that had to fit its size budget
# (services.sizing): left out of the JSON when nothing was cut.
TRUNCATED = "Fields shown as a preview (their start, ending in '…'), each with its whole size in bytes."


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_RUN_STATUSES


TERMINAL_RUN_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
LIVE_RUN_STATUSES = frozenset(RunStatus) - TERMINAL_RUN_STATUSES


class StepStatus(StrEnum):
    STARTED = "started"  # an attempt began and has reported nothing yet
    RETRYING = "retrying"  # the last attempt failed; the retry policy allows another
    WAITING = "waiting"  # an event wait or a sleep that has not ended
    COMPLETED = "completed"
    FAILED = "failed"  # for good: attempts exhausted or not retryable


class _Model(BaseModel):
    """Every model here is built (its validator, serializer and schema made) when first used, not when
    imported: a server lists its tools from their stored schemas (``tools/schemas.json``), and a command,
    a call or a sub-agent's runner builds only the models it uses."""

    model_config = ConfigDict(defer_build=True)


def build_models() -> None:
    """Build every model here now rather than at first use: for a process that forks others (the runners'
    launcher), so that they share the built models instead of each building its own."""
    pending: list[type[BaseModel]] = [_Model]
    while pending:  # breadth first: a model after those it holds, which it then reuses
        model = pending.pop(0)
        model.model_rebuild()
        pending.extend(model.__subclasses__())


class RetryPolicy(_Model):
    """How failed step attempts are retried: exponential backoff, capped."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(3, ge=1, le=100, description="Attempts per step, the first included.")
    initial_backoff_s: float = Field(1.0, ge=0, le=86_400, description="Wait before the first retry.")
    max_backoff_s: float = Field(300.0, ge=0, le=604_800, description="Longest wait between attempts.")
    backoff_coefficient: float = Field(2.0, ge=1, le=10, description="Each wait is this times the last.")

    @model_validator(mode="after")
    def _backoff_order(self) -> RetryPolicy:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(
                f"max_backoff_s ({self.max_backoff_s}) cannot be less than initial_backoff_s ({self.initial_backoff_s})"
            )
        return self

    def backoff_s(self, failed_attempt: int) -> float:
        """The wait after attempt number ``failed_attempt`` (1-based) failed."""
        return min(self.initial_backoff_s * self.backoff_coefficient ** (failed_attempt - 1), self.max_backoff_s)


class Usage(_Model):
    """What an agent's harness reported spending, as it reported it (never estimated lower).

    Summed over a run's attempts (``Run.usage``) and over a run's tree (``Run.tree_usage``)."""

    cost_usd: float = Field(0.0, ge=0, description="US dollars, as the harness priced it.")
    input_tokens: int = Field(0, ge=0)
    output_tokens: int = Field(0, ge=0)
    cache_read_tokens: int = Field(0, ge=0)
    cache_write_tokens: int = Field(0, ge=0)
    turns: int = Field(0, ge=0, description="Model turns (answers).")
    model: str | None = Field(None, description="The model last reported.")

    def plus(self, other: Usage) -> Usage:
        """The two added up (the model: the other's, if it names one)."""
        return Usage(
            cost_usd=self.cost_usd + other.cost_usd,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            turns=self.turns + other.turns,
            model=other.model or self.model,
        )

    def at_least(self, other: Usage) -> Usage:
        """Each figure the larger of the two: a later report never lowers what was reported."""
        return Usage(
            cost_usd=max(self.cost_usd, other.cost_usd),
            input_tokens=max(self.input_tokens, other.input_tokens),
            output_tokens=max(self.output_tokens, other.output_tokens),
            cache_read_tokens=max(self.cache_read_tokens, other.cache_read_tokens),
            cache_write_tokens=max(self.cache_write_tokens, other.cache_write_tokens),
            turns=max(self.turns, other.turns),
            model=other.model or self.model,
        )

    def minus(self, other: Usage) -> Usage:
        """What this has beyond ``other`` (never negative)."""
        return Usage(
            cost_usd=max(0.0, self.cost_usd - other.cost_usd),
            input_tokens=max(0, self.input_tokens - other.input_tokens),
            output_tokens=max(0, self.output_tokens - other.output_tokens),
            cache_read_tokens=max(0, self.cache_read_tokens - other.cache_read_tokens),
            cache_write_tokens=max(0, self.cache_write_tokens - other.cache_write_tokens),
            turns=max(0, self.turns - other.turns),
            model=self.model,
        )

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens


class Budget(_Model):
    """What a run may spend: ``max_budget_usd`` covers the run and all its descendants; ``max_turns``
    the run's own model turns. Reached, its sub-agents pause (a wait of kind 'budget') until raised."""

    max_budget_usd: float | None = Field(None, gt=0, le=1_000_000, description="US dollars for the run's whole tree.")
    max_turns: int | None = Field(None, ge=1, le=1_000_000, description="Model turns of the run's own agent.")


class Run(_Model):
    """One durable unit of work and where it stands."""

    run_id: str
    name: str
    key: str | None = None
    status: RunStatus
    input: JsonValue = None
    output: JsonValue = None
    error: JsonValue = None
    parent_run_id: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    workspace: str | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    deadline_at: datetime | None = Field(None, description="When the run fails with a timeout if unfinished.")
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    budget: Budget | None = Field(None, description="What the run (with its descendants) may spend.")
    usage: Usage | None = Field(None, description="What its own sub-agent's attempts spent.")
    tree_usage: Usage | None = Field(None, description="What it and all its descendants spent.")
    truncated: dict[str, int] | None = Field(None, exclude_if=_unset, description=TRUNCATED)


class RunState(NamedTuple):
    """What a checkpoint or a new wait decides on about a run, read with the step in one statement
    (``Transaction.run_and_step``): a plain tuple, for a path where building a ``Run`` costs more than
    the reading."""

    run_id: str
    status: RunStatus
    deadline_at: datetime | None


class Step(_Model):
    """A named entry of a run's journal: its latest attempt and outcome."""

    step: str
    kind: Literal["checkpoint", "event", "sleep", "runs", "approval", "budget"] = Field(
        "checkpoint",
        description="checkpoint: work the agent records; event: a wait for an event; sleep: a timer; "
        "runs: a wait for other runs to end; approval: a permission request waiting for a decision; "
        "budget: a sub-agent paused at its budget, until the budget is raised.",
    )
    status: StepStatus
    attempt: int = Field(description="Number of the latest attempt, from 1.")
    output: JsonValue = None
    error: JsonValue = None
    started_at: datetime
    ended_at: datetime | None = None
    retry_at: datetime | None = Field(None, description="When the retry policy allows the next attempt.")
    truncated: dict[str, int] | None = Field(None, exclude_if=_unset, description=TRUNCATED)


class JournalEntry(_Model):
    """One thing that happened to a run; ``seq`` orders entries across all runs."""

    seq: int
    run_id: str
    at: datetime
    kind: str
    step: str | None = None
    attempt: int | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class Event(_Model):
    """Something that happened outside a run: a reply, a CI result, an approval."""

    event_id: str
    name: str
    data: JsonValue = None
    source: str = Field(description="Where it came from: tool, cli, webhook, schedule or system.")
    received_at: datetime
    truncated: dict[str, int] | None = Field(None, exclude_if=_unset, description=TRUNCATED)


class Wait(_Model):
    """A step of a run that waits for an event (``kind='event'``), for a time (``kind='sleep'``), for
    other runs to end (``kind='runs'``, a fan-in) or for the decision on a permission request
    (``kind='approval'``: the event ``approval.<approval_id>``)."""

    step: str
    kind: Literal["event", "sleep", "runs", "approval", "budget"]
    events: list[str] = Field(default_factory=list, description="Event names waited for (any of them).")
    run_ids: list[str] = Field(default_factory=list, description="For runs: the ids of the runs waited for.")
    mode: Literal["all", "any"] | None = Field(None, description="For runs: wait for all of them, or any one.")
    match: dict[str, JsonValue] = Field(default_factory=dict, description="Dotted path -> value, all equal.")
    until: datetime | None = Field(None, description="The wait's timeout, or the sleep's wake time.")
    created_at: datetime

    @property
    def watched(self) -> list[str]:
        """What ends the wait, as the store indexes it: event names, or for a fan-in the awaited run ids."""
        return self.run_ids if self.kind == "runs" else self.events

    @model_validator(mode="before")
    @classmethod
    def _from_watched(cls, data: Any) -> Any:
        """A stored wait comes back with ``watched`` (the store keeps both kinds of name alike): its
        kind says which field they are."""
        if isinstance(data, dict) and "watched" in data:
            data = dict(data)
            data["run_ids" if data.get("kind") == "runs" else "events"] = data.pop("watched")
        return data


class AgentState(StrEnum):
    """Where a sub-agent's process stands (its run's status says where the work stands)."""

    QUEUED = "queued"  # to be started: first launch, a retry after backoff, or a resume after a wait
    STARTING = "starting"  # the supervisor claimed it and is launching its runner
    LIVE = "live"  # the runner reported the agent's process started and keeps heartbeating
    IDLE = "idle"  # the process exited while the run waits; it starts again when the wait ends
    DONE = "done"  # the run ended: no process any more


ACTIVE_AGENT_STATES = frozenset({AgentState.STARTING, AgentState.LIVE})
# How a process attempt ended: "budget" (stopped at its run's budget) and "silent" (stopped by the
# silence policy) are the supervisor's own reasons for stopping it.
ExitHow = Literal["exited", "timed_out", "stopped", "launch_failed", "lost", "budget", "silent"]


class Agent(_Model):
    """A sub-agent: how its process is launched, and its current (or last) process."""

    run_id: str
    profile: str = Field(description="The agent profile that launches it, e.g. 'claude'.")
    prompt: str
    cwd: str = Field(description="Where the agent works (its worktree, when it has one).")
    command: list[str] = Field(default_factory=list, description="For the 'command' profile: the argv to run.")
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    max_attempts: int = Field(description="Process attempts (crashes, timeouts, non-zero exits) before failing.")
    timeout_s: float | None = Field(None, description="Each attempt is killed after this many seconds.")
    worktree: str | None = Field(None, description="The git worktree the agent works in, if it has one.")
    branch: str | None = Field(None, description="The worktree's branch.")
    state: AgentState
    start_after: datetime | None = Field(None, description="Not started before this time (retry backoff).")
    resume: bool = Field(False, description="The next start resumes earlier work (after a wait or a crash).")
    attempt: int = Field(0, description="Processes started so far.")
    failures: int = Field(0, description="Attempts that crashed, timed out or exited non-zero.")
    session_id: str | None = Field(
        None, description="The harness's own session id (recorded as soon as it prints it), for its resume template."
    )
    account: str | None = Field(None, description="Whose usage limits it shares (see the profile's 'account').")
    paused_until: datetime | None = Field(
        None, description="Held at its account's usage limit until then: it starts (or resumes) after."
    )
    paused_reason: str | None = Field(None, description="Why it is paused, e.g. 'usage limit: five_hour window'.")
    pauses: int = Field(0, description="Usage-limit pauses in a row (they do not count as failures).")
    pid: int | None = Field(
        None, description="The runner's pid: the process that watches the agent and records its exit."
    )
    pgid: int | None = Field(
        None, description="The agent's pid, leader of its own process group (killed on cancel and timeout)."
    )
    host: str | None = None
    launched_at: datetime | None = None
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    attempt_deadline: datetime | None = Field(None, description="When the current attempt times out.")
    exited_at: datetime | None = None
    exit_code: int | None = Field(None, description="Negative: killed by that signal.")
    log_dir: str | None = Field(None, description="Directory of stdout.log and stderr.log.")
    attempt_usage: Usage | None = Field(None, description="What the current (or last) attempt spent so far.")
    active_at: datetime | None = Field(
        None, description="When its output last showed activity (a turn, a tool call): silence is measured from it."
    )
    activity_dropped: int = Field(0, description="Activity entries dropped, oldest first, to keep the cap.")

    @property
    def limit_account(self) -> str:
        """The account whose usage limit holds it (a record from before accounts: its profile's)."""
        return self.account or f"profile:{self.profile}"


ActivityKind = Literal["turn", "text", "tool", "permission", "pause", "budget", "message", "result", "silent", "note"]
ACTIVITY_SUMMARY_MAX = 300  # characters of an entry's one-line summary


class Activity(_Model):
    """One entry of a sub-agent's activity timeline (bounded: see ``Agent.activity_dropped``)."""

    seq: int = Field(0, description="Order within the store: later entries have larger numbers.")
    attempt: int | None = Field(None, description="The process attempt it happened in.")
    at: datetime
    kind: ActivityKind = Field(
        description="turn: the model answered; text: what it said (an excerpt); tool: a tool call; permission: a "
        "permission decision; pause: a usage-limit pause; budget: stopped at its budget; message: a message to "
        "it; result: the attempt's result; silent: no output for a while; note: anything else."
    )
    summary: str = Field(max_length=ACTIVITY_SUMMARY_MAX, description="One line: the file, the command, the words.")
    tool: str | None = Field(None, description="For tool: its name.")
    failed: bool | None = Field(None, description="For tool: whether it failed (null: still running).")
    duration_ms: int | None = Field(None, description="For tool: how long it took.")
    ref: str | None = Field(None, description="Stable id of the entry within its run (a tool call's id).")


MessageStatus = Literal["queued", "delivered", "dropped"]


class Message(_Model):
    """A message to a running sub-agent, kept until delivered (or dropped when its run ended)."""

    message_id: str
    run_id: str
    text: str
    source: str = Field(description="Who sent it: tool, cli, dashboard, api.")
    status: MessageStatus
    queued_at: datetime
    delivered_at: datetime | None = None
    attempt: int | None = Field(None, description="The attempt it was delivered to.")
    how: Literal["live", "resume", "inbox"] | None = Field(
        None, description="live: written to the running agent; resume: in its resume prompt; inbox: it read it."
    )


# Inputs: one model per primitive. Field descriptions become the tool argument descriptions.

RunId = Annotated[
    str,
    Field(min_length=1, max_length=64, description="The run's id, as start_run returned it."),
    PLAIN_TEXT,
]
StepName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=STEP_MAX,
        description="The step's name, unique within the run, stable across sessions (e.g. 'fetch-issues').",
    ),
    PLAIN_TEXT,
]
Labels = Annotated[
    dict[
        Annotated[str, Field(pattern=LABEL_KEY_PATTERN), PLAIN_TEXT],
        Annotated[str, Field(max_length=LABEL_VALUE_MAX), PLAIN_TEXT],
    ],
    Field(max_length=LABELS_MAX),
]


class _Input(_Model):
    model_config = ConfigDict(extra="forbid")


STEPS_LIMIT_MAX = 1000


def _steps_cursor(cursor: str | None) -> str | None:
    if cursor is not None and not re.fullmatch(r"[0-9]{1,9}", cursor):
        raise ValueError(f"{cursor!r:.40} is not a steps_cursor; pass the steps_cursor an answer gave, as it is")
    return cursor


StepsCursor = Annotated[str | None, PLAIN_TEXT, AfterValidator(_steps_cursor)]


BudgetUsd = Annotated[
    float | None,
    Field(
        gt=0,
        le=1_000_000,
        description="Budget in US dollars for this run and all its descendants: once they have spent it, its "
        "sub-agents pause (they do not fail) until the budget is raised with set_budget.",
    ),
]
MaxTurns = Annotated[
    int | None,
    Field(ge=1, le=1_000_000, description="Model turns the sub-agent may take over all its attempts; then it pauses."),
]


class CancelOn(_Input):
    event: Text = Field(min_length=1, max_length=NAME_MAX, pattern=r"^\S+$", description="The event's name.")
    match: Match | None = Field(
        None, description="Only events whose dotted paths equal these values, e.g. {'data.pr': 42}."
    )


class StartRunInput(_Input):
    name: Text = Field(
        min_length=1, max_length=NAME_MAX, description="What the run does, e.g. 'fix-issue-42'. Not unique."
    )
    input: Json = Field(None, description="Any JSON the run starts from (kept as the run's input).")
    key: OptionalText = Field(
        None,
        min_length=1,
        max_length=KEY_MAX,
        description="Idempotency key. If a run with this key exists, it comes back (created=false) "
        "with its steps, instead of a new run. Use a stable key derived from the task to resume after a crash.",
    )
    parent_run_id: OptionalText = Field(None, max_length=64, description="The run this one is part of.")
    labels: Labels = Field(default_factory=dict, description="String labels to filter by, e.g. {'repo': 'api'}.")
    retry: RetryPolicy | None = Field(None, description="Retry policy for failed steps (default: 3 attempts).")
    timeout_s: float | None = Field(
        None,
        gt=0,
        le=31_536_000,
        description="Fail the run if it is not finished this many seconds after start.",
    )
    cancel_on: list[CancelOn] = Field(
        default_factory=list,
        max_length=10,
        description="Cancel the run (and its descendants) when such an event arrives, e.g. "
        "[{'event': 'pr.closed', 'match': {'data.pr': 42}}].",
    )
    max_budget_usd: BudgetUsd = None
    workspace: OptionalText = Field(
        None,
        max_length=4096,
        description="Project directory the run belongs to (default: the client's project directory).",
    )


class CheckpointInput(_Input):
    run_id: RunId
    step: StepName
    output: Json = Field(
        None,
        description="The step's result (any JSON) to store. Completes the step unless error or begin is given.",
    )
    error: Json = Field(
        None, description="Report a failed attempt (a message or JSON object) instead of completing the step."
    )
    retryable: bool = Field(True, description="With error: false fails the step at once, with no retry.")
    begin: bool = Field(
        False,
        description="Ask 'have I done this already?' before a side effect: a completed step comes back "
        "replayed; otherwise a new attempt is recorded as started.",
    )

    @model_validator(mode="after")
    def _one_intent(self) -> CheckpointInput:
        if self.begin and (self.output is not None or self.error is not None):
            raise ValueError("begin=true takes neither output nor error: begin first, checkpoint the result after")
        if self.output is not None and self.error is not None:
            raise ValueError("give output (the step succeeded) or error (the attempt failed), not both")
        return self


class FinishRunInput(_Input):
    run_id: RunId
    output: Json = Field(None, description="The run's final result; the run becomes completed.")
    error: Json = Field(None, description="Why the run failed; the run becomes failed.")

    @model_validator(mode="after")
    def _one_outcome(self) -> FinishRunInput:
        if self.output is not None and self.error is not None:
            raise ValueError("give output (the run completed) or error (the run failed), not both")
        return self


class CancelRunInput(_Input):
    run_id: RunId
    reason: OptionalText = Field(None, max_length=2000, description="Why, recorded in the journal.")


class RetryRunInput(_Input):
    run_id: RunId
    reason: OptionalText = Field(None, max_length=2000, description="Why, recorded in the journal.")


class StatusInput(_Input):
    run_id: RunId
    journal_limit: int = Field(50, ge=0, le=1000, description="How many of the latest journal entries to include.")
    log_lines: int = Field(20, ge=0, le=1000, description="For a sub-agent: how many last lines of each log.")
    activity_limit: int = Field(20, ge=0, le=1000, description="For a sub-agent: how many activity entries.")
    activity_cursor: OptionalText = Field(
        None, max_length=32, description="activity_cursor of a previous status: the entries before those."
    )
    steps_limit: int | None = Field(
        None, ge=0, le=STEPS_LIMIT_MAX, description="At most this many steps, the latest (default: as many as fit)."
    )
    steps_cursor: StepsCursor = Field(None, description="steps_cursor of a previous answer: the steps before those.")
    include_outputs: bool = Field(True, description="false: the steps without their outputs and errors.")


class ListRunsInput(_Input):
    status: RunStatus | list[RunStatus] | None = Field(None, description="Only runs in this status (or any of these).")
    name: OptionalText = Field(None, max_length=NAME_MAX, description="Only runs with exactly this name.")
    parent_run_id: OptionalText = Field(None, max_length=64, description="Only children of this run.")
    label: Annotated[str | list[str] | None, PLAIN_TEXTS] = Field(
        None, description="'key=value' or 'key' (has the label); a list means all of them."
    )
    workspace: OptionalText = Field(None, max_length=4096, description="Only runs of this project directory.")
    since: Since | None = Field(None, description="Only runs created at or after this time (ISO 8601).")
    limit: int = Field(20, ge=1, le=LIST_LIMIT_MAX, description="Page size.")
    cursor: OptionalText = Field(None, max_length=64, description="next_cursor of the previous page.")


EventName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=NAME_MAX,
        pattern=r"^\S+$",
        description="An event name without spaces, e.g. 'approval', 'ci.finished', 'github.pull_request'.",
    ),
    PLAIN_TEXT,
]
BLOCK_S_MAX = 50.0  # under OpenCode's 60 s tool timeout: a blocked call always answers first
BLOCK_S_DEFAULT = 25.0
WAIT_MAX_S = 31_536_000
BlockSeconds = Annotated[
    float,
    Field(
        ge=0,
        le=BLOCK_S_MAX,
        description="How long this call may block (seconds) before it returns status 'waiting' or 'sleeping'; "
        "call again with the same run and step to keep waiting.",
    ),
]


class SendEventInput(_Input):
    name: EventName
    data: Json = Field(None, description="Any JSON the event carries, e.g. {'pr': 42, 'approved': true}.")
    id: OptionalText = Field(
        None,
        min_length=1,
        max_length=KEY_MAX,
        description="Deduplication id: an event with an id already seen is stored once (deduplicated=true).",
    )


class WaitForEventInput(_Input):
    run_id: RunId
    step: StepName
    event: Annotated[EventName | Annotated[list[EventName], Field(min_length=1, max_length=20)], PLAIN_TEXTS] = Field(
        description="The event name to wait for, or a list of names (any of them)."
    )
    match: Match | None = Field(
        None,
        description="Only events whose dotted paths equal these values, e.g. {'data.pr': 42}.",
    )
    timeout_s: float | None = Field(
        None, gt=0, le=WAIT_MAX_S, description="Give up waiting this many seconds after the wait began."
    )
    block_s: BlockSeconds = BLOCK_S_DEFAULT


class WaitForRunsInput(_Input):
    run_ids: Annotated[list[RunId], Field(min_length=1, max_length=100)] = Field(
        description="The runs to wait for, e.g. the children this run started."
    )
    mode: Literal["all", "any"] = Field("all", description="all: until every run has ended; any: until one has.")
    timeout_s: float | None = Field(
        None, gt=0, le=WAIT_MAX_S, description="Give up this many seconds after the wait began."
    )
    block_s: BlockSeconds = BLOCK_S_DEFAULT
    run_id: RunId | None = Field(
        None, description="The waiting run: with step, the wait is a durable, memoized step of it."
    )
    step: StepName | None = None

    @model_validator(mode="after")
    def _run_and_step(self) -> WaitForRunsInput:
        if (self.run_id is None) != (self.step is None):
            raise ValueError("give run_id and step together (to record the wait as a step), or neither")
        return self


class SpawnSubagentInput(_Input):
    prompt: Text = Field(
        min_length=1,
        max_length=200_000,
        description="The sub-agent's task, complete and self-contained: it sees nothing of this conversation.",
    )
    agent: OptionalText = Field(
        None,
        min_length=1,
        max_length=100,
        description="Agent profile: 'claude' (Claude Code headless), 'codex', 'gemini', 'opencode', 'command' (any "
        "executable, see command) or one defined in the config file. Default: the config's default_agent, "
        "else 'claude'.",
    )
    name: OptionalText = Field(None, min_length=1, max_length=NAME_MAX, description="The child run's name.")
    key: OptionalText = Field(
        None,
        min_length=1,
        max_length=KEY_MAX,
        description="Idempotency key: spawning again with the same key returns the same sub-agent (created=false).",
    )
    parent_run_id: OptionalText = Field(None, max_length=64, description="Your run: the sub-agent becomes its child.")
    cwd: OptionalText = Field(
        None, max_length=4096, description="Directory the sub-agent works in (default: the parent's workspace)."
    )
    timeout_s: float | None = Field(
        None, gt=0, le=604_800, description="Kill an attempt (its whole process group) after this many seconds."
    )
    max_attempts: int | None = Field(
        None, ge=1, le=100, description="Attempts before the run fails: a crash, timeout or non-zero exit retries."
    )
    labels: Labels = Field(default_factory=dict, description="String labels to filter by, e.g. {'repo': 'api'}.")
    concurrency_key: OptionalText = Field(
        None,
        min_length=1,
        max_length=NAME_MAX,
        description="Sub-agents sharing a key run at most concurrency_limit at a time (e.g. one per repository).",
    )
    concurrency_limit: int | None = Field(
        None, ge=1, le=1000, description="With concurrency_key: how many may run at once (default 1, or the config's)."
    )
    worktree: bool = Field(
        False,
        description="Work in a new git worktree on its own branch, made from cwd's repository (kept after the run).",
    )
    command: list[Annotated[str, Field(max_length=10_000), PLAIN_TEXT]] | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="For agent='command' only: the argv to run exactly as given (no shell; braces such as "
        "{prompt} or {db} are not placeholders here); the prompt arrives on its stdin.",
    )
    max_budget_usd: BudgetUsd = None
    max_turns: MaxTurns = None

    @model_validator(mode="after")
    def _real_prompt(self) -> SpawnSubagentInput:
        if not self.prompt.strip():
            raise ValueError("prompt is blank; give the sub-agent its task")
        if self.concurrency_limit is not None and self.concurrency_key is None:
            raise ValueError("concurrency_limit needs a concurrency_key to apply to")
        return self


class SpawnAction(SpawnSubagentInput):
    """A schedule's action: spawn a sub-agent with these arguments at each firing."""

    type: Literal["spawn_subagent"]
    worktree: Literal[False] = Field(False, description="Not available for scheduled spawns.")


class SendEventAction(_Input):
    """A schedule's action: send this event at each firing (its id is the schedule and due time)."""

    type: Literal["send_event"]
    name: EventName
    data: Json = Field(None, description="The event's data.")


ScheduleAction = Annotated[SpawnAction | SendEventAction, Field(discriminator="type")]
EVERY_S_MIN = 1.0


class ScheduleInput(_Input):
    name: Annotated[str, PLAIN_TEXT, AfterValidator(_schedule_name)] = Field(
        description="Unique name; scheduling it again updates it. Letters, digits and . _ : - (not first, "
        "no '..'), at most 128 characters, e.g. 'nightly-triage'.",
        json_schema_extra={"pattern": SCHEDULE_NAME_PATTERN},
    )
    cron: OptionalText = Field(
        None,
        max_length=200,
        description="Five-field cron, e.g. '0 9 * * 1-5' (weekdays 09:00), evaluated in `timezone`.",
    )
    every_s: float | None = Field(
        None, ge=EVERY_S_MIN, le=WAIT_MAX_S, description="Or fire every this many seconds (at least 1)."
    )
    at: Instant | None = Field(None, description="Or fire once at this time (ISO 8601 with offset).")
    action: ScheduleAction = Field(
        description="What each firing does: {'type': 'spawn_subagent', 'prompt': ..., <spawn_subagent's "
        "arguments>} or {'type': 'send_event', 'name': ..., 'data': ...}."
    )
    timezone: Text = Field("UTC", max_length=64, description="IANA time zone for cron, e.g. 'Europe/Paris'.")
    overlap: Literal["skip", "allow", "cancel_previous"] = Field(
        "skip",
        description="For spawns, when the previous firing's run is still live: skip this firing, allow "
        "both, or cancel the previous run.",
    )
    catch_up: Literal["skip", "latest", "all"] = Field(
        "skip",
        description="Due times missed while no orchestrator ran: skip them, fire once for the latest, "
        "or fire each (at most 100).",
    )
    enabled: bool = Field(True, description="False pauses the schedule (nothing fires until re-enabled).")

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleInput:
        given = [field for field in ("cron", "every_s", "at") if getattr(self, field) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of cron, every_s or at (got {', '.join(given) or 'none'})")
        if self.at is not None and self.at.tzinfo is None:
            raise ValueError("at needs a time zone offset, e.g. 2026-01-01T09:00:00Z")
        return self


class Firing(_Model):
    """One firing of a schedule: recorded once per due time, with what it did."""

    due_at: datetime
    fired_at: datetime
    outcome: Literal["spawned", "sent", "skipped", "failed"]
    run_id: str | None = None
    event_id: str | None = None
    detail: str | None = None


def _stored_action(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A schedule's action as read back: one stored under older, looser input rules is kept as it
    is, so that its schedule can still be listed, paused and removed (a firing checks it again)."""
    try:
        return handler(value)
    except ValidationError:
        if not isinstance(value, dict):
            raise
        kind = SpawnAction if value.get("type") == "spawn_subagent" else SendEventAction
        return kind.model_construct(**value)


class Schedule(_Model):
    """Recurring or delayed work, fired by the supervisor once per due time."""

    name: str
    cron: str | None = None
    every_s: float | None = None
    at: datetime | None = None
    timezone: str = "UTC"
    action: Annotated[ScheduleAction, WrapValidator(_stored_action)]
    overlap: Literal["skip", "allow", "cancel_previous"] = "skip"
    catch_up: Literal["skip", "latest", "all"] = "skip"
    enabled: bool = True
    anchor_at: datetime = Field(description="every_s counts from here.")
    next_due: datetime | None = Field(None, description="When it fires next (none: a one-shot that fired).")
    last: Firing | None = Field(None, description="The latest firing.")
    firings: int = Field(0, description="How many due times it has fired (skips included).")
    missed: int = Field(0, description="Due times skipped by catch_up after downtime.")
    created_at: datetime
    updated_at: datetime
    upcoming: list[datetime] = Field(default_factory=list, description="The next few due times.")


class ListSchedulesInput(_Input):
    enabled: bool | None = Field(None, description="Only enabled (true) or paused (false) schedules.")


class UnscheduleInput(_Input):
    # Not SCHEDULE_NAME_PATTERN: a schedule stored under an older, looser rule can still be removed.
    name: Text = Field(min_length=1, max_length=NAME_MAX, description="The schedule's name.")


class SleepInput(_Input):
    run_id: RunId
    step: StepName
    seconds: float | None = Field(None, ge=0, le=WAIT_MAX_S, description="Sleep this long from the first call.")
    until: Instant | None = Field(None, description="Or sleep until this time (ISO 8601 with offset).")
    block_s: BlockSeconds = BLOCK_S_DEFAULT

    @model_validator(mode="after")
    def _one_time(self) -> SleepInput:
        if (self.seconds is None) == (self.until is None):
            raise ValueError("give seconds or until, exactly one of them")
        if self.until is not None and self.until.tzinfo is None:
            raise ValueError("until needs a time zone offset, e.g. 2026-01-01T09:00:00Z")
        return self


class ListEventsInput(_Input):
    name: OptionalText = Field(None, max_length=NAME_MAX, description="Only events with this name.")
    limit: int = Field(20, ge=1, le=LIST_LIMIT_MAX, description="Page size.")
    cursor: OptionalText = Field(None, max_length=32, description="next_cursor of the previous page.")


class RunFilter(_Model):
    """A list_runs query as the store sees it: plain values, no choices left."""

    statuses: list[RunStatus] = Field(default_factory=list)
    name: str | None = None
    parent_run_id: str | None = None
    labels: list[tuple[str, str | None]] = Field(default_factory=list)
    workspace: str | None = None
    since: datetime | None = None
    before_run_id: str | None = None
    limit: int = 20
    # The dashboard's run list: only runs without a parent, and one search box whose text is a run's
    # key or name, or the start of ids: (low, high), low <= run_id < high (ids.prefix_range).
    top_level: bool = False
    search_text: str | None = None
    search_ids: tuple[str, str] | None = None


# Results.


class ToolResult(_Model):
    """What every tool answers, besides its own fields: a note when the answer had to leave something
    out to fit the result budget (``max_result_bytes``; see services.sizing)."""

    omitted: str | None = Field(
        None, exclude_if=_unset, description="What this answer left out to fit its size budget, and how to read it."
    )


# A run's steps as start_run and status show them: a page (the latest, or those before a cursor), how
# many there are, and the names and statuses of the steps before the page (services.sizing.page_steps).
_STEPS_TOTAL = "How many steps the run has."
_STEPS_CURSOR = "Set when steps before `steps` exist: pass it to status as steps_cursor for the page before."
_EARLIER_STEPS = "Steps before `steps` as name -> status, oldest first: as many as fit (the nearest ones)."


class StartRunResult(ToolResult):
    run: Run
    created: bool = Field(description="False when the key already existed and this is the same run again.")
    steps: list[Step] = Field(description="The run's latest steps, oldest first: completed ones need not be redone.")
    steps_total: int = Field(0, description=_STEPS_TOTAL)
    steps_cursor: str | None = Field(None, description=_STEPS_CURSOR)
    earlier_steps: dict[str, StepStatus] | None = Field(None, exclude_if=_unset, description=_EARLIER_STEPS)


class CheckpointResult(ToolResult):
    step: Step = Field(description="The step as stored.")
    replayed: bool = Field(
        description="True when the step was already completed (or already failed for good): the stored "
        "outcome wins and the side effect must not be repeated."
    )
    previous_outcome: Literal["unknown", "failed"] | None = Field(
        None,
        description="With begin: 'unknown' when an earlier attempt started and never reported (a crash "
        "mid-step: check whether its side effect happened before repeating it); 'failed' when it failed.",
    )
    retry: bool | None = Field(None, description="With error: whether the policy allows another attempt.")
    retry_at: datetime | None = Field(None, description="With error and retry=true: when to attempt again.")


class FinishRunResult(ToolResult):
    run: Run
    replayed: bool = Field(description="True when the run had already finished this way: the stored result wins.")


class CancelRunResult(ToolResult):
    run: Run
    cancelled_run_ids: list[str] = Field(description="The runs this call cancelled: the run and live descendants.")


class RetryRunResult(ToolResult):
    run: Run = Field(description="The run, live again: running, or queued for a sub-agent's process.")
    reset_steps: list[str] = Field(
        description="Steps that start over: failed ones get a new set of attempts, unanswered waits are cleared."
    )


class CollectResult(_Model):
    before: datetime = Field(description="Ended runs, events and firings older than this were removed.")
    runs: int = Field(description="Runs removed, with their steps, journal, waits and process records.")
    events: int
    firings: int = Field(description="Schedule firings removed.")


class CollectPreview(_Model):
    """What gc would remove, shown before it does (``--dry-run``, or to confirm)."""

    before: datetime = Field(description="Ended runs, events and firings older than this would be removed.")
    runs: int = Field(
        description="Runs that would be removed (ended before, with no live descendant), counted up to 10000."
    )
    runs_more: bool = Field(False, description="More runs than were counted would go (the count is a lower bound).")
    oldest: list[Run] = Field(default_factory=list, description="The first runs to go, by end (without payloads).")
    newest: list[Run] = Field(
        default_factory=list,
        description="The last runs to go among those counted, by end (with runs_more, later ones go too).",
    )
    events: int = Field(description="Events that would be removed: received before, and before every live run.")
    firings: int = Field(description="Schedule firings that would be removed: due before.")


class StatusResult(ToolResult):
    run: Run
    steps: list[Step] = Field(description="The run's latest steps (or those before steps_cursor), oldest first.")
    steps_total: int = Field(0, description=_STEPS_TOTAL)
    steps_cursor: str | None = Field(None, description=_STEPS_CURSOR)
    earlier_steps: dict[str, StepStatus] | None = Field(None, exclude_if=_unset, description=_EARLIER_STEPS)
    waits: list[Wait] = Field(default_factory=list, description="Pending waits: for events, or sleeps.")
    children: list[Run] = Field(default_factory=list)
    process: Agent | None = Field(None, description="For a sub-agent: its process (pid, attempt, heartbeat, exit).")
    log_tail: dict[str, list[str]] = Field(
        default_factory=dict, description="For a sub-agent: the last lines of its stdout and stderr."
    )
    journal: list[JournalEntry] = Field(description="The latest journal entries, oldest first.")
    activity: list[Activity] = Field(
        default_factory=list, description="For a sub-agent: its latest activity entries, oldest first."
    )
    activity_cursor: str | None = Field(None, description="Pass as activity_cursor for earlier entries; null: none.")
    messages: list[Message] = Field(default_factory=list, description="Messages to it not yet delivered.")


class SendEventResult(ToolResult):
    event_id: str
    deduplicated: bool = Field(description="True when an event with this id was already stored: nothing new.")
    woken_run_ids: list[str] = Field(description="Runs whose waits this event satisfied.")
    cancelled_run_ids: list[str] = Field(
        default_factory=list, description="Runs this event cancelled (their cancel_on), with their descendants."
    )


class WaitResult(ToolResult):
    status: Literal["received", "waiting", "timed_out"] = Field(
        description="received: the event is in `event`; waiting: not yet, call again with the same run and "
        "step; timed_out: timeout_s passed first."
    )
    event: Event | None = None
    timeout_at: datetime | None = Field(None, description="When the wait times out, if it has a timeout.")
    step: Step


class WaitForRunsResult(ToolResult):
    status: Literal["done", "waiting", "timed_out"] = Field(
        description="done: all (or any) of the runs ended, see `runs`; waiting: not yet, call again; "
        "timed_out: timeout_s passed first."
    )
    runs: list[Run] = Field(description="The runs waited for, as they are now (outputs of the ended ones).")
    timeout_at: datetime | None = None
    step: Step | None = Field(None, description="The wait step, when run_id and step were given.")


class SpawnSubagentResult(ToolResult):
    run: Run = Field(description="The child run: queued until the supervisor starts its process.")
    created: bool = Field(description="False when the key already existed: the same sub-agent comes back.")
    process: Agent = Field(description="How it is launched and, once started, its process.")


class ScheduleResult(ToolResult):
    schedule: Schedule
    created: bool = Field(description="False when a schedule of this name existed and was updated.")
    next_due: list[datetime] = Field(description="The next few due times (UTC).")


class ListSchedulesResult(ToolResult):
    schedules: list[Schedule] = Field(description="By name, each with its last firing and upcoming due times.")


class UnscheduleResult(ToolResult):
    schedule: Schedule = Field(description="The schedule as it was before removal.")


class SleepResult(ToolResult):
    status: Literal["done", "sleeping"] = Field(
        description="done: the time has come; sleeping: not yet, call again with the same run and step."
    )
    wake_at: datetime
    step: Step


class ListEventsResult(ToolResult):
    events: list[Event] = Field(description="Newest first.")
    next_cursor: str | None = Field(None, description="Pass as cursor for the next page; null on the last page.")


class ListRunsResult(ToolResult):
    runs: list[Run]
    next_cursor: str | None = Field(None, description="Pass as cursor for the next page; null on the last page.")


# Approvals: a sub-agent's permission request is a wait of its run (kind 'approval') for the event
# 'approval.<approval_id>', whose data is the decision; so a person, a parent agent, a webhook or a
# schedule decides one alike, and the step keeps the request and, once ended, the decision.

TOOL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # Claude Code's tools, and MCP tools as mcp__server__tool
TOOL_NAME_MAX = 160  # with the step's prefix, hash and number, a step name stays within STEP_MAX
JsonObject = Annotated[dict[str, JsonValue], BeforeValidator(_plain_json)]


def _tool_name(name: str) -> str:
    if not re.fullmatch(TOOL_NAME_PATTERN, name):
        raise ValueError(
            f"{name!r:.100} is not a tool name: letters, digits and _ . - (a letter or digit first), e.g. 'Write' "
            "or 'mcp__github__create_pr'"
        )
    return name


def _rule(rule: str | None) -> str | None:
    if rule is not None:
        parse_rule(rule)  # a ValueError that names the rule and says how to write it
    return rule


RuleText = Annotated[str | None, PLAIN_TEXT, AfterValidator(_rule)]
Behavior = Literal["allow", "deny"]
Scope = Literal["call", "rule"]
_SCOPE = "call: this call only; rule: this call and, for the rest of the run, every call `rule` matches."
_RULE_FIELD = "With scope='rule': the permission rule, e.g. 'Bash(npm test:*)' (default: the request's suggested_rule)."


class PermissionPromptInput(_Input):
    tool_name: Annotated[str, PLAIN_TEXT, AfterValidator(_tool_name)] = Field(
        min_length=1,
        max_length=TOOL_NAME_MAX,
        description="The tool asked about, e.g. 'Write', 'Bash', 'mcp__github__create_pr'.",
        json_schema_extra={"pattern": TOOL_NAME_PATTERN},
    )
    input: JsonObject = Field(description="The tool call's arguments, exactly as given.")
    tool_use_id: OptionalText = Field(None, max_length=200, description="The harness's id of the tool call.")
    run_id: RunId | None = Field(
        None, description="The asking sub-agent's run (default: this server's MCP_ORCHESTRATOR_RUN_ID)."
    )


class ApprovalDecision(_Input):
    """A decision on an approval: the data of the event 'approval.<approval_id>'."""

    behavior: Behavior = Field(description="allow or deny the call.")
    scope: Scope = Field("call", description=_SCOPE)
    rule: RuleText = Field(None, max_length=4096, description=_RULE_FIELD)
    message: OptionalText = Field(None, max_length=2000, description="Said to the agent (why it was denied).")
    by: Literal["person", "agent", "policy", "timeout"] | None = Field(
        None, description="Who decided (default: agent for an event sent by a tool, else person)."
    )
    source: OptionalText = Field(None, max_length=200, description="Where the decision came from: cli, api, ...")
    event_id: str | None = Field(None, description="Set when recorded: the event that carried the decision.")
    decided_at: datetime | None = Field(None, description="Set when recorded.")

    @model_validator(mode="after")
    def _rule_needs_scope(self) -> ApprovalDecision:
        if self.rule is not None and self.scope != "rule":
            raise ValueError("a rule goes with scope='rule' (allow or deny it for the rest of the run); drop it")
        return self


class ListApprovalsInput(_Input):
    run_id: RunId | None = Field(None, description="Only the requests of this run and of its descendants.")
    status: Literal["pending", "decided", "all"] = Field("pending", description="Which requests.")
    limit: int = Field(50, ge=1, le=LIST_LIMIT_MAX, description="At most this many, newest first.")


class DecideApprovalInput(_Input):
    approval_id: Text = Field(min_length=1, max_length=64, description="The request's id, as list_approvals shows it.")
    behavior: Behavior = Field(description="allow or deny the call.")
    scope: Scope = Field("call", description=_SCOPE)
    rule: RuleText = Field(None, max_length=4096, description=_RULE_FIELD)
    message: OptionalText = Field(None, max_length=2000, description="Said to the agent, e.g. why it was denied.")

    @model_validator(mode="after")
    def _rule_needs_scope(self) -> DecideApprovalInput:
        if self.rule is not None and self.scope != "rule":
            raise ValueError("a rule goes with scope='rule' (allow or deny it for the rest of the run); drop it")
        return self


class Approval(_Model):
    """A permission request of a sub-agent and, once made, the decision on it."""

    approval_id: str
    run_id: str = Field(description="The asking run.")
    step: str = Field(description="The run's approval step: approval:<tool>:<input hash>:<n>.")
    status: Literal["pending", "allowed", "denied", "expired", "abandoned"] = Field(
        description="pending: waiting for a decision; expired: denied undecided by timeout; abandoned: the run "
        "ended first."
    )
    tool_name: str
    input: JsonValue = Field(description="The call's arguments; a text preview when over 16 KiB (see truncated).")
    truncated: bool = False
    tool_use_id: str | None = None
    suggested_rule: str | None = Field(None, description="The narrowest rule that covers the call.")
    requested_at: datetime
    expires_at: datetime | None = None
    decision: ApprovalDecision | None = None
    answered_at: datetime | None = Field(None, description="When the agent was given the decision.")


class ListApprovalsResult(ToolResult):
    approvals: list[Approval] = Field(description="Newest first.")


class DecideApprovalResult(ToolResult):
    approval: Approval = Field(description="The request with its decision.")


class PermissionAnswer(_Model):
    """What the harness's permission prompt tool gets (Claude Code's shape, as one JSON text)."""

    behavior: Behavior
    updatedInput: dict[str, JsonValue] | None = None  # Claude Code's name
    message: str | None = None


class SendMessageInput(_Input):
    run_id: RunId
    text: Text = Field(min_length=1, max_length=20_000, description="What to tell the sub-agent, in plain words.")


class SendMessageResult(ToolResult):
    message: Message = Field(description="The message as queued (status 'queued'), or as already delivered.")
    delivery: str = Field(description="When it will reach the agent, in words.")


class ReadMessagesInput(_Input):
    run_id: RunId


class ReadMessagesResult(ToolResult):
    messages: list[Message] = Field(
        description="Messages not delivered before, oldest first; now delivered. As many as fit: call again for more."
    )


class SetBudgetInput(_Input):
    run_id: RunId
    max_budget_usd: BudgetUsd = None
    max_turns: MaxTurns = None

    @model_validator(mode="after")
    def _something(self) -> SetBudgetInput:
        if self.max_budget_usd is None and self.max_turns is None:
            raise ValueError("give max_budget_usd, max_turns or both: the new limits")
        return self


class SetBudgetResult(ToolResult):
    run: Run = Field(description="The run with its new budget and what its tree has spent.")
    resumed_run_ids: list[str] = Field(description="Runs paused at a budget that the new budget lets go on.")


TaskTool = Literal["spawn_subagent", "wait_for_runs", "wait_for_event", "sleep"]
TaskStatus = Literal["working", "input_required", "completed", "failed", "cancelled"]


class TaskRecord(_Model):
    """A long call a client took as an MCP task: a view of the run or wait the call started, so any
    process on the store answers for it by asking that run or wait again, after any restart."""

    task_id: str = Field(description="Unguessable: whoever holds it may read the call's result.")
    tool: TaskTool
    arguments: dict[str, JsonValue] = Field(description="The call's arguments, asked again to see where it is.")
    run_id: str = Field(description="The run it views: the spawned sub-agent's, else the waiting run's.")
    status: TaskStatus = "working"
    created_at: datetime
    updated_at: datetime = Field(description="When its status last changed.")
    created: bool | None = Field(None, description="spawn_subagent: whether the call created the run.")
