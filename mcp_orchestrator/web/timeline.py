"""A run page's timeline (a waterfall of everything that happened to the run), its tree, and JSON values
drawn whole as foldable trees.

The timeline puts a run's steps (checkpoints and waits), failed attempts, events received, child runs,
sub-agent processes and activity, permission requests and journal moments on one time axis, oldest at
the top. Each entry's bar is placed by its start and length relative to the run's span; the page draws
it as an SVG rectangle, whose position is an attribute, not a style, so the strict CSP holds.

Values (a run's input and output, a step's output, a prompt) are shown whole: a large one is folded,
never cut; one with very many nodes is shown as indented JSON text rather than a tree of thousands of
elements. Each fold carries a ``data-key`` that stays the same across renders, so the script keeps
what a person opened open when the live stream swaps in a fresh page. A value is in the page once: its
copy button writes the JSON back from the drawn tree (every scalar is drawn as its JSON text).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup

from ..models import Activity, Approval, JournalEntry, Run, StatusResult, Step, StepStatus
from ..services.runs import TREE_DEPTH, TREE_MAX, TREE_WIDTH
from ..views import activity_outcome, activity_text, brief, spent
from .cells import lasted

TIMELINE_SHOWN = 300  # the latest entries of a timeline
TREE_NODES = 400  # nodes of one value drawn as a foldable tree; a larger value is indented JSON text
OPEN_UP_TO = 1500  # characters of JSON: a value this small starts unfolded, a larger one folded
MIN_BAR = 0.4  # percent of the span: the narrowest bar, so that an instant still shows
ANCESTORS_SHOWN = 20  # runs above this one in its tree
TICKS = 5  # labels on the time axis
# Journal entries that the timeline shows in another form (as a step's bar, a process's bar, a child run).
SHOWN_OTHERWISE = frozenset(
    {
        "step_started",
        "step_completed",
        "step_failed",
        "waiting",
        "runs_ended",
        "woke",
        "wait_timed_out",
        "process_started",
        "process_exited",
        "subagent_spawned",
        "message_queued",
        "permission_decided",
    }
)


@dataclass(frozen=True)
class Value:
    """A named JSON value of an entry (its output, its error, an event's data), shown whole."""

    label: str
    value: Any


@dataclass(frozen=True)
class Entry:
    """One line of the waterfall: something that happened to the run, at a moment or over a span."""

    key: str  # stable across renders: what keeps it open when the page is swapped
    kind: str  # 'checkpoint', '<kind> wait', 'attempt', 'event', 'child run', 'process', an activity's kind ...
    text: str
    start: datetime
    end: datetime | None = None  # None: an instant
    ongoing: bool = False  # still going on: its bar reaches to now
    outcome: str = ""
    attempt: int | None = None
    status: str | None = None  # shown as a badge
    run_id: str | None = None  # a child run, linked
    failed: bool = False
    values: tuple[Value, ...] = ()


@dataclass(frozen=True)
class Bar:
    """An entry placed on the axis, in percent of the run's span."""

    entry: Entry
    left: float
    width: float
    took: str  # '' for an instant
    offset: str  # how long after the start of the axis it began: '+1.2 s'

    @property
    def x(self) -> str:
        return f"{min(self.left, 100 - MIN_BAR):.2f}"

    @property
    def w(self) -> str:
        return f"{max(self.width, MIN_BAR):.2f}"


@dataclass(frozen=True)
class Timeline:
    bars: list[Bar]
    start: datetime
    end: datetime
    hidden: int  # older entries read for the page but left out (over TIMELINE_SHOWN)
    unread: bool  # older steps, journal entries, activity or children exist that the page did not read
    ticks: list[str]  # offsets from the start, evenly spaced along the axis


@dataclass
class Node:
    """A run in the tree: the one shown is ``here``; its ancestors form the chain above it."""

    run: Run
    depth: int
    here: bool = False
    children: list[Node] = field(default_factory=list)


@dataclass(frozen=True)
class Tree:
    roots: list[Node]
    above: int  # ancestors not shown (over ANCESTORS_SHOWN)
    cut: str  # why part of the tree below is not shown, or ''

    @property
    def alone(self) -> bool:
        """The run has neither parent nor children: nothing to draw."""
        return len(self.roots) == 1 and self.roots[0].here and not self.roots[0].children


def timeline(status: StatusResult, approvals: Sequence[Approval], *, unread: bool = False) -> Timeline:
    """Every entry read of the run on one axis, oldest first: the latest TIMELINE_SHOWN of them.
    ``unread``: the page's reads were bounded and left older entries in the store (the page says so).

    The axis ends when the run ended or, while it goes on, at the latest moment the store knows of,
    never at the clock's now: the page then renders the same until something happens, so a live
    stream stays quiet (``dashboard.py``); the script counts what is still going on."""
    run = status.run
    entries = [*_steps(status, approvals), *_children(status.children), *_journal(status)]
    entries += [_activity(entry) for entry in status.activity]
    entries.sort(key=lambda entry: entry.start)  # stable: activity entries keep their order
    hidden = max(0, len(entries) - TIMELINE_SHOWN)
    entries = entries[hidden:]
    start = min([run.created_at, *(entry.start for entry in entries)])
    known = [*(entry.start for entry in entries), *(entry.end for entry in entries if entry.end)]
    ended = run.ended_at if run.status.terminal and run.ended_at else run.updated_at
    end = max([ended, *known])  # a tool call's reported length may reach past the run's end
    span = max((end - start).total_seconds(), 1e-3)
    bars = []
    for entry in entries:
        stop = end if entry.ongoing else entry.end
        left = (entry.start - start).total_seconds() / span * 100
        width = 0.0 if stop is None else max(0.0, (stop - entry.start).total_seconds()) / span * 100
        took = "" if entry.end is None else lasted((entry.end - entry.start).total_seconds())
        offset = "+" + lasted((entry.start - start).total_seconds())
        bars.append(Bar(entry, left, width, took, offset))
    ticks = [lasted(span * part / (TICKS - 1)) for part in range(TICKS)]
    return Timeline(bars, start, end, hidden, unread, ticks)


def _steps(status: StatusResult, approvals: Sequence[Approval]) -> list[Entry]:
    asked = {approval.step: approval for approval in approvals if approval.run_id == status.run.run_id}
    entries = []
    for step in status.steps:
        kind = "checkpoint" if step.kind == "checkpoint" else f"{step.kind} wait"
        values = _step_values(step, asked.get(step.step))
        ongoing = step.status in (StepStatus.STARTED, StepStatus.WAITING, StepStatus.RETRYING)
        text = step.step
        if (approval := asked.get(step.step)) is not None:
            text = f"{approval.tool_name}: {brief(approval.input, 80)}"
        entries.append(
            Entry(
                f"step:{step.step}",
                kind,
                text,
                step.started_at,
                step.ended_at,
                ongoing and step.ended_at is None,
                brief(step.error if step.error is not None else step.output, 120),
                step.attempt if step.attempt > 1 else None,
                status=step.status,
                failed=step.status == StepStatus.FAILED,
                values=values,
            )
        )
    return entries


def _step_values(step: Step, approval: Approval | None) -> tuple[Value, ...]:
    values = []
    if approval is not None:
        values.append(Value("input", approval.input))
        if approval.decision is not None:
            values.append(Value("decision", approval.decision.model_dump(mode="json", exclude_none=True)))
    if step.output is not None:
        values.append(Value("output", step.output))
    if step.error is not None:
        values.append(Value("error", step.error))
    return tuple(values)


def _children(children: Sequence[Run]) -> list[Entry]:
    entries = []
    for child in children:
        cost = spent(child.tree_usage)
        values = tuple(
            Value(label, value)
            for label, value in (("input", child.input), ("output", child.output), ("error", child.error))
            if value is not None
        )
        entries.append(
            Entry(
                f"child:{child.run_id}",
                "child run",
                child.name,
                child.created_at,
                child.ended_at,
                not child.status.terminal,
                "" if cost == "-" else cost,
                status=child.status,
                run_id=child.run_id,
                failed=child.status == "failed",
                values=values,
            )
        )
    return entries


def _journal(status: StatusResult) -> list[Entry]:
    """Events received, failed attempts, processes (from their start to their exit) and the run's other
    moments, from its journal."""
    outputs = {step.step: step.output for step in status.steps}
    entries: list[Entry] = []
    started: dict[int, JournalEntry] = {}
    exited: dict[int, JournalEntry] = {}
    values: tuple[Value, ...]
    for entry in status.journal:
        if entry.kind == "process_started" and entry.attempt is not None:
            started[entry.attempt] = entry
        elif entry.kind == "process_exited" and entry.attempt is not None:
            exited[entry.attempt] = entry
        elif entry.kind == "event_received":
            output = outputs.get(entry.step or "")
            event = output.get("event") if isinstance(output, dict) else None
            values = (Value("event", event if event is not None else entry.detail),)
            text = str(entry.detail.get("name", ""))
            source = f"from {entry.detail['source']}" if entry.detail.get("source") else ""
            entries.append(Entry(f"journal:{entry.seq}", "event", text, entry.at, outcome=source, values=values))
        elif entry.kind == "attempt_failed":
            text = entry.step or "process"
            values = (Value("detail", entry.detail),)
            outcome = brief(entry.detail.get("error", entry.detail), 120)
            entries.append(
                Entry(
                    f"journal:{entry.seq}",
                    "attempt failed",
                    text,
                    entry.at,
                    outcome=outcome,
                    attempt=entry.attempt,
                    failed=True,
                    values=values,
                )
            )
        elif entry.kind not in SHOWN_OTHERWISE:
            values = (Value("detail", entry.detail),) if entry.detail else ()
            kind = entry.kind.replace("_", " ")
            outcome = brief(entry.detail, 120) if entry.detail else ""
            entries.append(
                Entry(
                    f"journal:{entry.seq}",
                    "journal",
                    kind,
                    entry.at,
                    outcome=outcome,
                    attempt=entry.attempt,
                    values=values,
                    failed=entry.kind in ("run_failed", "silent", "budget_reached"),
                )
            )
    process = status.process
    for attempt, begun in started.items():
        end = exited.get(attempt)
        live = end is None and process is not None and process.attempt == attempt and process.exited_at is None
        detail = {"started": begun.detail, **({"exited": end.detail} if end else {})}
        how = "" if end is None else f"{end.detail.get('how', 'exited')}, exit code {end.detail.get('exit_code')}"
        entries.append(
            Entry(
                f"process:{attempt}",
                "process",
                f"attempt {attempt}",
                begun.at,
                None if end is None else end.at,
                live,
                how,
                attempt,
                failed=end is not None and end.detail.get("exit_code") not in (0, None),
                values=(Value("process", detail),),
            )
        )
    return entries


def _activity(entry: Activity) -> Entry:
    end = None
    if entry.duration_ms is not None:
        end = entry.at + timedelta(milliseconds=entry.duration_ms)
    return Entry(
        f"activity:{entry.seq}",
        entry.kind,
        activity_text(entry),
        entry.at,
        end,
        entry.kind == "tool" and entry.failed is None,
        activity_outcome(entry),
        entry.attempt,
        failed=entry.failed is True,
        values=(Value("entry", entry.model_dump(mode="json", exclude_none=True)),),
    )


def tree(run: Run, ancestors: Sequence[Run], above: int, descendants: Sequence[tuple[int, Run]], cut: bool) -> Tree:
    """The run's chain of ancestors (root first, without their other children), the run, and its descendants
    nested under it (``descendants`` and ``cut`` as ``Runs.tree_below`` gives them: depth first, bounded,
    and whether the tree holds more)."""
    here = Node(run, len(ancestors), here=True)
    chain = [Node(ancestor, depth) for depth, ancestor in enumerate(ancestors)]
    for parent, child in zip(chain, [*chain[1:], here], strict=False):  # none without ancestors
        parent.children.append(child)
    path = [here]  # the open nodes, by depth below the run
    for depth, descendant in descendants:
        node = Node(descendant, here.depth + depth + 1)
        del path[depth + 1 :]
        path[-1].children.append(node)
        path.append(node)
    why = ""
    if cut:
        why = (
            f"The tree shows at most {TREE_DEPTH} levels below this run, the newest {TREE_WIDTH} runs under each "
            f"and {TREE_MAX} in all; open a run to see the tree below it."
        )
    return Tree(chain[:1] or [here], above, why)


def json_value(value: Any, key: str) -> Markup:
    """A JSON value whole, as folds a person opens (``<details>``); a string, or a value of very many nodes,
    as preformatted text. Built in one pass, bottom up, as plain strings, each piece escaped once: a busy
    run page holds thousands of nodes, and a value may be large and deep."""
    out: list[str] = ["<div class='value'>", "<button type='button' class='copy'>Copy</button>", ""]
    if isinstance(value, str) or _count(value, TREE_NODES + 1) > TREE_NODES:
        text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
        out.append(f"<pre class='j-text'>{_escape(text)}</pre>")
        size = len(text)
    else:
        size = _node(value, key, out)
    opened = size <= OPEN_UP_TO
    if not opened or isinstance(value, (dict, list)):
        state = " open" if opened else ""
        summary = f"<summary class='muted'>{size:,} characters</summary>"
        out[2] = f"<details class='fold' data-key='{_escape(key)}'{state}>{summary}"
        out.append("</details>")
    out.append("</div>")
    return Markup("".join(out))


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _count(value: Any, limit: int) -> int:
    """Nodes in a value, counted up to ``limit``."""
    count = 1
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        count += _count(child, limit - count)
        if count >= limit:
            break
    return count


def _node(value: Any, key: str, out: list[str]) -> int:
    """Append a value's HTML to ``out`` and return the length of its JSON text (as ``json.dumps`` writes it),
    summed from its parts: a container as rows (its non-empty containers folds, open when small), a scalar
    as its JSON text. A fold's opening tag is written once its contents were, and their size is known."""
    if isinstance(value, (dict, list)) and value:
        is_dict = isinstance(value, dict)
        out.append(f"<div class='j-body {'j-obj' if is_dict else 'j-arr'}'>")
        size = 2 * len(value)  # the brackets, and ', ' between items
        pairs = value.items() if isinstance(value, dict) else enumerate(value)
        for index, (name, child) in enumerate(pairs):
            label = f"<span class='j-key'>{_escape(str(name))}</span>"
            if is_dict:
                size += len(json.dumps(name, ensure_ascii=False)) + 2  # the key and ': '
            if isinstance(child, (dict, list)) and child:
                at = len(out)
                out.append("")
                child_size = _node(child, f"{key}/{index}", out)
                state = " open" if child_size <= OPEN_UP_TO // 3 else ""
                opening = f"<details class='j' data-key='{_escape(f'{key}/{index}')}'{state}>"
                out[at] = f"{opening}<summary>{label}: <span class='muted'>{_size(child)}</span></summary>"
                out.append("</details>")
            else:
                out.append(f"<div class='j-row'>{label}: ")
                child_size = _node(child, f"{key}/{index}", out)
                out.append("</div>")
            size += child_size
        out.append("</div>")
        return size
    kind = "null" if value is None else "bool" if isinstance(value, bool) else type(value).__name__
    kind = {"int": "num", "float": "num", "dict": "empty", "list": "empty"}.get(kind, kind)
    text = json.dumps(value, ensure_ascii=False)
    out.append(f"<span class='j-{kind}'>{_escape(text)}</span>")
    return len(text)


def _size(value: dict[str, Any] | list[Any]) -> str:
    """What a folded container holds: '{…} 3 keys', '[…] 1 item'."""
    count = len(value)
    if isinstance(value, dict):
        return f"{{…}} {count} key" + ("" if count == 1 else "s")
    return f"[…] {count} item" + ("" if count == 1 else "s")
