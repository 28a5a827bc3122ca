"""Results sized for a model's context: long values as previews, steps in pages, and a last guard.

Claude Code warns when a tool's result passes 10k tokens and cuts it past 25k, and a session pays for
every byte a result holds: a run of 300 steps with 2 KB outputs would answer ``status`` with 600 KB.
So an answer meant for a model (a tool's result, the ``run://`` resource, the JSON API's run) is
fitted to ``max_result_bytes`` of JSON. A list of steps becomes a page of the latest ones, with a
cursor to the rest and the names and statuses of those before; a long value becomes its start, with
its whole size in the object's ``truncated`` and, in ``omitted``, how to read it whole; other lists
keep their newest entries. Only when all that is not enough does ``fit`` shorten what is left, saying
so in ``omitted``. An answer that fits is handed on exactly as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic_core
from pydantic import BaseModel, ValidationError

from ..models import (
    Activity,
    Event,
    JournalEntry,
    ListRunsResult,
    Message,
    Run,
    StartRunResult,
    StatusResult,
    Step,
    StepStatus,
    ToolResult,
)

PREVIEW_BYTES = 1024  # a value of an object in a list: a step's output, a run's input, an event's data
LIST_PREVIEW_BYTES = 256  # a value of a run in a list of runs (or a status's children)
LINE_CHARS = 500  # a line of text in a list: a log line, a queued message
NOTE_BYTES = 1024  # what the guard keeps free for its note (``omitted``)
STEPS_SHARE = 2  # a page of steps takes at most 1/STEPS_SHARE of what is left; earlier steps' names the rest
# No step is sent in fewer bytes of JSON (its nine field names alone take 76; a test holds it): an answer
# within a budget shows at most budget // STEP_BYTES_MIN steps, so a read for it takes no more whole.
STEP_BYTES_MIN = 100
# A status that does not fit keeps of each other list the latest entries within 1/n of the budget: what
# a sub-agent does now first; the journal, which repeats the steps, last. The steps take what is left.
SHARES = {"activity": 8, "waits": 12, "children": 12, "log_tail": 12, "messages": 16, "journal": 16}

WHOLE_STEP = (
    "values marked truncated are previews: checkpoint(run_id, step, begin=true) on a completed step returns "
    "its output whole (for a received wait, its event)"
)
WHOLE_RUN = "a run's own status(run_id) shows more of its input, output and error"

M = TypeVar("M", bound=BaseModel)


def json_size(value: Any) -> int:
    """Bytes of the JSON a value (or a model) is sent as."""
    if isinstance(value, BaseModel):
        return len(value.__pydantic_serializer__.to_json(value))
    return len(pydantic_core.to_json(value, fallback=str))


def cut(text: str, limit: int) -> str:
    """``text`` if its JSON takes at most ``limit`` bytes, else its start ending in '…' that does."""
    if json_size(text) <= limit:
        return text
    keep = limit
    while True:
        shown = text.encode()[: max(keep, 0)].decode(errors="ignore") + "…"
        over = json_size(shown) - limit
        if over <= 0 or keep <= 0:
            return shown
        keep -= over


def preview(value: Any, limit: int) -> tuple[Any, int | None]:
    """``(value, None)`` when its JSON takes at most ``limit`` bytes, else ``(its start as text, its whole
    size)``: a string's own start, or the start of any other value's JSON."""
    if value is None:
        return None, None
    size = json_size(value)
    if size <= limit:
        return value, None
    return cut(value if isinstance(value, str) else pydantic_core.to_json(value).decode(), limit), size


def _previewed(model: M, fields: tuple[str, ...], limit: int) -> M:
    update: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    for field in fields:
        shown, size = preview(getattr(model, field), limit)
        if size is not None:
            update[field], sizes[field] = shown, size
    return model.model_copy(update={**update, "truncated": sizes}) if sizes else model


def shown_run(run: Run, limit: int = PREVIEW_BYTES) -> Run:
    """The run with its input, output and error as previews where longer than ``limit`` bytes."""
    return _previewed(run, ("input", "output", "error"), limit)


def shown_step(step: Step, limit: int = PREVIEW_BYTES, *, outputs: bool = True) -> Step:
    """The step with its output and error as previews where longer than ``limit`` bytes (left out
    without ``outputs``)."""
    if not outputs:
        bare = step.output is None and step.error is None
        return step if bare else step.model_copy(update={"output": None, "error": None})
    return _previewed(step, ("output", "error"), limit)


def shown_event(event: Event, limit: int = PREVIEW_BYTES) -> Event:
    return _previewed(event, ("data",), limit)


# Steps: the one way every face that shows them to a model pages them.


class StepsLeftOut(LookupError):
    """A page needed a step its read left out (``RunSteps``)."""


@dataclass(frozen=True)
class RunSteps:
    """A run's steps as a read left them: each step's name and status, in order, and the steps themselves
    from position ``start`` on. A long run's status reads whole only the steps its answer can show
    (``steps_window``), not every output the run ever recorded."""

    names: Sequence[tuple[str, StepStatus]]
    whole: Sequence[Step]
    start: int = 0

    @classmethod
    def of(cls, steps: Sequence[Step]) -> RunSteps:
        """Steps all read whole."""
        return cls([(step.step, step.status) for step in steps], steps)

    def __len__(self) -> int:
        return len(self.names)

    def step(self, position: int) -> Step:
        if not self.start <= position < self.start + len(self.whole):
            raise StepsLeftOut(position)
        return self.whole[position - self.start]


def steps_window(total: int, *, before: int | None, limit: int | None, budget: int | None) -> tuple[int, int]:
    """The positions, among a run's ``total`` steps, of those ``page_steps`` (and ``fit_status``'s whole
    answer, when it can fit) may show with these arguments: a read takes the others by name."""
    end = total if before is None else min(before, total)
    start = 0 if limit is None else max(0, end - limit)
    return (start, end) if budget is None else (max(start, end - budget // STEP_BYTES_MIN), end)


@dataclass(frozen=True)
class StepPage:
    """A page of a run's steps and what frames it (the fields of StatusResult and StartRunResult)."""

    steps: list[Step]
    total: int
    cursor: str | None  # where the page starts, when steps come before it
    earlier: dict[str, StepStatus] | None  # names and statuses of steps before the page, oldest first

    def fields(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "steps_total": self.total,
            "steps_cursor": self.cursor,
            "earlier_steps": self.earlier,
        }


def page_steps(
    steps: RunSteps,
    *,
    before: int | None = None,
    limit: int | None = None,
    outputs: bool = True,
    budget: int | None = None,
) -> StepPage:
    """The latest steps before position ``before`` (default: all of them), at most ``limit``.

    Without a ``budget`` they come whole (a person's page, or the terminal). With one, as many as
    fit in half of it (at least one), each value a preview of at most PREVIEW_BYTES, and the rest of
    the budget names the steps before the page with their statuses: what a resuming model needs
    to know is done, in one answer, however long the run. ``StepsLeftOut`` if the page needs a step
    the read left out (none, when the read took ``steps_window``'s)."""
    end = len(steps) if before is None else min(before, len(steps))
    if budget is None:
        start = 0 if limit is None else max(0, end - limit)
        page = [steps.step(position) for position in range(start, end)]
        page = [shown_step(step, outputs=False) for step in page] if not outputs else page
        return StepPage(page, len(steps), str(start) if start else None, None)
    shown: list[Step] = []
    used, start = 2, end
    while start > 0 and (limit is None or len(shown) < limit):
        entry = shown_step(steps.step(start - 1), outputs=outputs)
        size = json_size(entry) + 1
        if shown and used + size > budget // STEPS_SHARE:
            break
        shown.append(entry)
        used += size
        start -= 1
    shown.reverse()
    earlier: dict[str, StepStatus] = {}
    room, named = budget - used, start
    while named > 0:
        name, status = steps.names[named - 1]
        size = json_size(name) + len(status) + 4
        if room < size:
            break
        earlier[name] = status
        room -= size
        named -= 1
    earlier = dict(reversed(earlier.items()))
    return StepPage(shown, len(steps), str(start) if start else None, earlier or None)


def truncated_steps(steps: Sequence[Step]) -> bool:
    return any(step.truncated for step in steps)


# What status and start_run show a model.


def fit_start(result: StartRunResult, steps: RunSteps, budget: int) -> StartRunResult:
    """start_run's answer within ``budget``: for a run that comes back, its latest steps and the names
    of the rest (``page_steps``)."""
    whole = result.model_copy(update=page_steps(steps).fields())
    if json_size(whole) <= budget:
        return whole
    run = shown_run(result.run, budget // 8)
    frame = result.model_copy(update={"run": run, "steps": [], "earlier_steps": None})
    page = page_steps(steps, budget=budget - json_size(frame))
    notes = [WHOLE_STEP] if truncated_steps(page.steps) else []
    notes += [WHOLE_RUN] if run.truncated else []
    return frame.model_copy(update={**page.fields(), "omitted": _joined(notes)})


def fit_status(
    result: StatusResult,
    steps: RunSteps,
    budget: int,
    *,
    before: int | None = None,
    limit: int | None = None,
    outputs: bool = True,
) -> StatusResult:
    """status's answer within ``budget``. Whole when it fits; else the run's own values show up to an
    eighth of the budget, each other list keeps its latest entries within its share (SHARES), and the
    steps take what is left (``page_steps``). What was left out is said in ``omitted``. ``steps`` may be
    read as ``steps_window`` says for this ``budget``."""
    try:
        whole = result.model_copy(update=page_steps(steps, before=before, limit=limit, outputs=outputs).fields())
    except StepsLeftOut:  # a read leaves steps out only where they cannot all fit (steps_window)
        whole = None
    if whole is not None and json_size(whole) <= budget:
        return whole
    notes: list[str] = []

    def latest(name: str, items: Sequence[Any]) -> list[Any]:
        kept = _latest(items, budget // SHARES[name])
        if len(kept) < len(items):
            notes.append(f"{name}: the latest {len(kept)} of {len(items)}")
        return kept

    run = shown_run(result.run, budget // 8)
    children = latest("children", [shown_run(child, LIST_PREVIEW_BYTES) for child in result.children])
    if len(children) < len(result.children):
        notes[-1] += f" (list_runs(parent_run_id='{result.run.run_id}') pages them all)"
    waits = latest("waits", result.waits)
    journal = latest("journal", [_shown_entry(entry) for entry in result.journal])
    messages = latest("messages", [_shown_message(message) for message in result.messages])
    activity = _latest(result.activity, budget // SHARES["activity"])  # its cursor says what is left out
    activity_cursor = result.activity_cursor
    if len(activity) < len(result.activity):
        activity_cursor = str(activity[0].seq) if activity else _after(result.activity)
    lines = budget // SHARES["log_tail"] // max(len(result.log_tail), 1)
    log_tail = {stream: _latest([cut_line(line) for line in tail], lines) for stream, tail in result.log_tail.items()}
    if log_tail != result.log_tail:
        notes.append(f"log_tail: lines cut at {LINE_CHARS} characters, the latest that fit")
    process = result.process
    if process is not None:
        prompt = process.prompt if json_size(process.prompt) <= PREVIEW_BYTES else cut(process.prompt, PREVIEW_BYTES)
        command = [cut_line(part) for part in process.command[:20]]
        if prompt != process.prompt or command != process.command:
            process = process.model_copy(update={"prompt": prompt, "command": command})
            notes.append("process: its prompt and command shortened")
    frame = result.model_copy(
        update={
            "run": run,
            "steps": [],
            "earlier_steps": None,
            "waits": waits,
            "children": children,
            "journal": journal,
            "activity": activity,
            "activity_cursor": activity_cursor,
            "log_tail": log_tail,
            "messages": messages,
            "process": process,
            "omitted": _joined([WHOLE_STEP, WHOLE_RUN, *notes]),  # room for the note it will get
        }
    )
    page = page_steps(steps, before=before, limit=limit, outputs=outputs, budget=budget - json_size(frame))
    notes = ([WHOLE_STEP] if truncated_steps(page.steps) else []) + ([WHOLE_RUN] if run.truncated else []) + notes
    return frame.model_copy(update={**page.fields(), "omitted": _joined(notes)})


def fit_runs(result: ListRunsResult, budget: int) -> ListRunsResult:
    """A list_runs page within ``budget``: the runs' values as short previews, and the page ended
    early (its cursor moved back with it) when they still do not fit."""
    if json_size(result) <= budget:
        return result
    runs = [shown_run(run, LIST_PREVIEW_BYTES) for run in result.runs]
    kept = _first(runs, budget - 512)
    cursor = kept[-1].run_id if len(kept) < len(runs) else result.next_cursor
    notes = [WHOLE_RUN] if any(run.truncated for run in kept) else []
    if len(kept) < len(runs):
        notes.append(f"runs: this page ends after {len(kept)} to fit; pass next_cursor as cursor for the next")
    return result.model_copy(update={"runs": kept, "next_cursor": cursor, "omitted": _joined(notes)})


def first_fitting(items: Sequence[M], budget: int) -> list[M]:
    """The first of ``items`` that fit three quarters of ``budget`` together (at least one): what an
    answer that hands things over for good (read_messages) may hold; the rest wait for the next call."""
    return _first(list(items), budget * 3 // 4)


def cut_line(line: str) -> str:
    return line if len(line) <= LINE_CHARS else f"{line[:LINE_CHARS]}… [{len(line) - LINE_CHARS} more characters]"


def _latest(items: Sequence[Any], budget: int) -> list[Any]:
    """The last of ``items`` (oldest first) whose JSON fits ``budget`` together."""
    kept: list[Any] = []
    used = 2
    for item in reversed(items):
        used += json_size(item) + 1
        if used > budget:
            break
        kept.append(item)
    kept.reverse()
    return kept


def _after(activity: Sequence[Activity]) -> str | None:
    return str(activity[-1].seq + 1) if activity else None


def _shown_entry(entry: JournalEntry) -> JournalEntry:
    detail = {key: preview(value, 256)[0] for key, value in entry.detail.items()}
    return entry.model_copy(update={"detail": detail}) if detail != entry.detail else entry


def _shown_message(message: Message) -> Message:
    text = cut_line(message.text)
    return message.model_copy(update={"text": text}) if text != message.text else message


def _joined(notes: list[str]) -> str | None:
    return "; ".join(dict.fromkeys(notes)) if notes else None


# The last guard, for any tool's answer.


def fit(result: M, budget: int) -> M:
    """``result`` when its JSON fits ``budget`` bytes; else the same answer made to fit, in steps
    that each keep more than the next: the values of its runs, steps and events as previews; then its
    longest lists shortened from the end; then its long strings cut. What was left out is said in
    ``omitted`` (a ToolResult). The answer stays a valid instance of its model."""
    if json_size(result) <= budget:
        return result
    room = budget - NOTE_BYTES  # what is kept leaves room for the note that says what was not
    kinds: set[type[BaseModel]] = set()
    shaped: M = result
    for limit in (PREVIEW_BYTES, LIST_PREVIEW_BYTES):
        if json_size(shaped) > room:
            shaped = _shrunk(shaped, kinds, limit)
    notes = ([WHOLE_STEP] if kinds & {Step, Event} else []) + ([WHOLE_RUN] if Run in kinds else [])
    for name in _lists_by_size(shaped):
        if json_size(shaped) <= room:
            break
        items = getattr(shaped, name)
        kept = _first(items, room - (json_size(shaped) - json_size(items)))
        shaped = shaped.model_copy(update={name: kept})
        if len(kept) < len(items):
            notes.append(f"{name}: the first {len(kept)} of {len(items)}, to fit the result budget")
    for limit in (4096, 1024, 256, 64):
        if json_size(shaped) <= room:
            break
        shaped = _strings_cut(shaped, limit)
        notes.append(f"strings cut at {limit} characters")
    if notes and isinstance(shaped, ToolResult):
        note = _joined([*filter(None, [shaped.omitted]), *notes]) or ""
        shaped = shaped.model_copy(
            update={"omitted": cut(note, NOTE_BYTES - 16) if len(note) > NOTE_BYTES // 2 else note}
        )
    return shaped


def _shrunk(value: Any, kinds: set[type[BaseModel]], limit: int) -> Any:
    """``value`` with every run, step and event in it shown with previews of ``limit`` bytes (itself
    when none changes); the kinds previewed are added to ``kinds``."""
    shown: Any = value
    if isinstance(value, Run):
        shown = shown_run(value, limit)
    elif isinstance(value, Step):
        shown = shown_step(value, limit)
    elif isinstance(value, Event):
        shown = shown_event(value, limit)
    elif isinstance(value, BaseModel):
        update = {}
        for name in type(value).model_fields:
            field = getattr(value, name)
            if isinstance(field, BaseModel | list):
                shrunk = _shrunk(field, kinds, limit)
                if shrunk is not field:
                    update[name] = shrunk
        return value.model_copy(update=update) if update else value
    elif isinstance(value, list) and any(isinstance(item, BaseModel) for item in value):
        items = [_shrunk(item, kinds, limit) for item in value]
        return items if any(new is not old for new, old in zip(items, value, strict=True)) else value
    if shown is not value:
        kinds.add(type(value))
    return shown


def _lists_by_size(model: BaseModel) -> list[str]:
    lists = [name for name in type(model).model_fields if isinstance(getattr(model, name), list)]
    return sorted(lists, key=lambda name: -json_size(getattr(model, name)))


def _first(items: list[Any], budget: int) -> list[Any]:
    """The first of ``items`` whose JSON fits ``budget`` together (at least one)."""
    kept: list[Any] = []
    used = 2
    for item in items:
        used += json_size(item) + 1
        if kept and used > budget:
            break
        kept.append(item)
    return kept


def _strings_cut(model: M, limit: int) -> M:
    """The model with every string longer than ``limit`` characters cut (kept as it was if that would
    not be a valid instance of its model)."""

    def walk(value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            return f"{value[:limit]}… [{len(value) - limit} more characters]"
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    try:
        return type(model).model_validate(walk(model.model_dump(mode="json")))
    except ValidationError:
        return model
