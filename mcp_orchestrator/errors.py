"""Errors a caller can act on.

Every face (MCP tools, HTTP, CLI) maps these in one place. Each class has a stable ``code`` and
carries the fields a caller needs to decide what to do next; the message quotes the values and
says what to do.

    OrchestratorError
    ├── InvalidInput          a value broke a limit or a rule the schema cannot express
    ├── RunNotFound           no run has this id
    ├── RunAmbiguous          an id prefix a person typed matches several runs
    ├── RunTerminal           the run is completed, failed or cancelled and takes no more writes
    ├── KeyConflict           an idempotency key already belongs to a different run
    ├── StepFailed            the step failed for good (attempts exhausted or not retryable)
    ├── ApprovalNotFound      no pending or decided permission request has this id
    ├── ApprovalDecided       the permission request was decided already
    ├── TaskNotFound          no MCP task has this id (or it went with its run)
    ├── NotAllowed            the caller may not do this (an agent deciding a request not of its descendants)
    ├── ConfigError           settings or the store location are wrong
    ├── InternalError         a bug: something failed that no rule foresaw
    └── StoreError            the store could not do its part
        ├── StoreBusy         other processes held the write lock for too long
        ├── SchemaTooNew      the store was written by a newer mcp-orchestrator
        └── StoreFileGone     the SQLite file was removed or replaced under a running server
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

if TYPE_CHECKING:  # not at run time: `mcp-orchestrator token` imports this module and nothing of pydantic
    from pydantic import ValidationError


class Remedy(NamedTuple):
    """What to do next, where that is a tool a model would call: kept apart from the message, so that
    another face (the shell) can name its own way of doing it instead, and nothing else of the text."""

    tool: str  # the MCP tool's name, e.g. "list_runs"
    after: str = ""  # the words after its name, e.g. " shows the runs that exist"
    before: str = ""  # the words before it, e.g. "use a new step name, or "


class OrchestratorError(Exception):
    code: ClassVar[str] = "error"
    # Whose fault, in HTTP's words: 4xx the caller's (400 bad input, 404 unknown, 409 the state forbids
    # it), 503 the store's (busy or unusable: try again later), 500 ours or the setup's.
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, remedy: Remedy | None = None, **fields: Any) -> None:
        """``remedy``: a tool to call next, said after ``message`` (``"{message}; {before}{tool}{after}"``)."""
        self.problem = message
        self.remedy = remedy
        self.message = self.worded({})
        super().__init__(self.message)
        self.fields = fields

    def __str__(self) -> str:
        return self.message

    def worded(self, tools: Mapping[str, str]) -> str:
        """The message with the remedy's tool named as ``tools`` names it (a face's own words for it), if
        there; the rest of the text, values quoted in it included, as it is."""
        if self.remedy is None:
            return self.problem
        before, tool, after = self.remedy.before, self.remedy.tool, self.remedy.after
        return f"{self.problem}; {before}{tools.get(tool, tool)}{after}"


class InvalidInput(OrchestratorError):
    code = "invalid_input"
    http_status = 400


class RunNotFound(OrchestratorError):
    code = "run_not_found"
    http_status = 404

    def __init__(self, run_id: str, *, by_key_or_prefix: bool = False, prefix_min: int = 0) -> None:
        """``by_key_or_prefix``: ``run_id`` was also tried as a key and as the start of an id; ``prefix_min``:
        it was too short for that (the fewest characters an id's start takes)."""
        names = "id or key" if by_key_or_prefix else "id"
        if prefix_min:
            starts = f"; to name a run by the start of its id, give at least {prefix_min} characters of it"
        else:
            starts = ", and no run's id starts with it" if by_key_or_prefix else ""
        super().__init__(
            f"no run has {names} {run_id!r}{starts}",
            remedy=Remedy("list_runs", " shows the runs that exist (filter by workspace or name)"),
            run_id=run_id,
        )


class RunAmbiguous(OrchestratorError):
    """A prefix of run ids that several runs share; ``candidates`` lists some (id, name, status, created)."""

    code = "run_ambiguous"
    http_status = 400

    def __init__(self, prefix: str, candidates: list[dict[str, str]], more: bool) -> None:
        listed = "".join("\n  " + "  ".join(c.values()) for c in candidates)
        count = f"more than {len(candidates)}" if more else str(len(candidates))
        super().__init__(
            f"{prefix!r} starts {count} run ids; give more of the id (or the run's key):{listed}",
            candidates=candidates,
        )


class RunTerminal(OrchestratorError):
    code = "run_terminal"
    http_status = 409

    def __init__(self, run_id: str, status: str, refused: str) -> None:
        super().__init__(
            f"run {run_id!r} is {status}: {refused}. Read it with status, or start a new run for new work",
            run_id=run_id,
            status=status,
        )


class KeyConflict(OrchestratorError):
    code = "key_conflict"
    http_status = 409


class StepFailed(OrchestratorError):
    code = "step_failed"
    http_status = 409


class ApprovalNotFound(OrchestratorError):
    code = "approval_not_found"
    http_status = 404

    def __init__(self, approval_id: str) -> None:
        super().__init__(
            f"no permission request has id {approval_id!r}",
            remedy=Remedy("list_approvals", " shows the pending ones"),
            approval_id=approval_id,
        )


class ApprovalDecided(OrchestratorError):
    code = "approval_decided"
    http_status = 409


class TaskNotFound(OrchestratorError):
    code = "task_not_found"
    http_status = 404

    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"no task has id {task_id!r}: it was never created here, or its run was deleted (retention); the "
            "run's outcome may still be read with status(run_id) if you know it",
            task_id=task_id[:100],
        )


class NotAllowed(OrchestratorError):
    code = "not_allowed"
    http_status = 403


class ConfigError(OrchestratorError):
    code = "config_error"


class InternalError(OrchestratorError):
    code = "internal_error"


class StoreError(OrchestratorError):
    code = "store_error"
    http_status = 503


class StoreBusy(StoreError):
    code = "store_busy"


class SchemaTooNew(StoreError):
    code = "schema_too_new"
    http_status = 500

    @classmethod
    def of(cls, location: str, version: int, known: int, other: str) -> SchemaTooNew:
        """The refusal to open a store that a newer release migrated (``other``: "file", "database")."""
        return cls(
            f"the store {location} has schema version {version}, newer than this mcp-orchestrator "
            f"knows ({known}); upgrade mcp-orchestrator, or point --db at another {other}",
            version=version,
        )


class StoreFileGone(StoreError):
    """A SQLite store's file was removed or replaced under the server that has it open: that
    server refuses every later read and write (code ``store_error``; fields ``path``, ``inode``)."""


def invalid_input_from(
    exc: ValidationError,
    what: str = "arguments",
    *,
    names: Mapping[str, str] | None = None,
    said: Callable[[str], str] | None = None,
) -> InvalidInput:
    """One readable sentence per problem, naming the field, the value given and what is expected.

    ``names``: how the caller names the top-level fields (a shell's flags), instead of their own names;
    ``said``: the caller's words for a problem of the whole input (a model's rule that spans fields)."""
    problems = []
    errors = exc.errors(include_url=False)
    # A choice (an enum or a literal) given a word that is none of them: that error alone speaks for its
    # place, not the union's other members ("should be a list") that the same value was also tried as.
    chosen = [_path(e["loc"]) for e in errors if _is_choice(e)]
    for error in errors:
        path = _path(error["loc"])
        tried_as_member = len(path) < len(error["loc"])
        if not _is_choice(error) and tried_as_member and any(c[: len(path)] == path for c in chosen):
            continue
        where = _where(path, names or {})
        if _is_choice(error):
            choices = str((error.get("ctx") or {}).get("expected", "")).replace("'", "")
            problem = f"{shown_value(error['input'])} is not one of {choices}"
            problems.append(f"{where}: {problem}" if where else problem)
            continue
        message = error["msg"].removeprefix("Value error, ")
        if not where and said is not None:
            message = said(message)
        given = error.get("input")
        shown = "" if isinstance(given, dict) or error["type"] == "missing" else f" (got {shown_value(given)})"
        problems.append(f"{where}: {message}{shown}" if where else message)
    return InvalidInput(f"invalid {what}: " + "; ".join(problems), problems=problems)


def _is_choice(error: Any) -> bool:
    return error["type"] in _CHOICE_ERRORS and isinstance(error.get("input"), str)


def _path(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """A location without the parts that name which member of a union was tried."""
    return tuple(part for part in loc if not _union_member(part))


def _where(path: tuple[int | str, ...], names: Mapping[str, str]) -> str:
    """The location as a caller reads it: ``status.0``, or with ``names`` ``--status`` (an item's index is
    left out: the value quoted says which) and ``--retry max_attempts``."""
    if not path or not isinstance(path[0], str) or path[0] not in names:
        return ".".join(str(part) for part in path)
    inner = ".".join(str(part) for part in path[1:] if isinstance(part, str))
    return f"{names[path[0]]} {inner}" if inner else names[path[0]]


_CHOICE_ERRORS = {"enum", "literal_error"}


def _union_member(part: int | str) -> bool:
    """A location part that names which member of a union was tried ('list[str]'), not a field."""
    return isinstance(part, str) and ("[" in part or part in _UNION_MEMBERS)


_UNION_MEMBERS = {"str", "int", "float", "bool", "constrained-str", "constrained-int", "constrained-float"}
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 3, 60, 60, 4, 4


def shown_value(value: Any, limit: int = 80) -> str:
    """A caller's value, quoted for a message: short, and safe for values too deep or too long to print."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"  # repr of a huge int is slow or refused
    try:
        text = _SHORT.repr(value)
    except (ValueError, RecursionError):
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_json(value: Any, limit: int | None = 200, *, ensure_ascii: bool = True) -> str:
    """A value as one line of JSON (a string as itself) for a message or a screen, cut to ``limit``
    characters with ``…`` (None: whole)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=ensure_ascii)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


T = TypeVar("T")


def raise_or_return(outcome: T | OrchestratorError) -> T:
    """A transaction's result, or the error it returned so that it is raised after the commit."""
    if isinstance(outcome, OrchestratorError):
        raise outcome
    return outcome
