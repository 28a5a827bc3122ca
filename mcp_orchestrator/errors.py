"""Errors a caller can act on.

Every face (MCP tools, HTTP, CLI) maps these in one place. Each class has a stable ``code`` and
carries the fields a caller needs to decide what to do next; the message quotes the values and
says what to do.

    OrchestratorError
    ├── InvalidInput          a value broke a limit or a rule the schema cannot express
    ├── RunNotFound           no run has this id
    ├── RunTerminal           the run is completed, failed or cancelled and takes no more writes
    ├── KeyConflict           an idempotency key already belongs to a different run
    ├── StepFailed            the step failed for good (attempts exhausted or not retryable)
    ├── ConfigError           settings or the store location are wrong
    └── StoreError            the store could not do its part
        ├── StoreBusy         other processes held the write lock for too long
        └── SchemaTooNew      the store was written by a newer mcp-orchestrator
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ValidationError


class OrchestratorError(Exception):
    code: ClassVar[str] = "error"

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def __str__(self) -> str:
        return self.message


class InvalidInput(OrchestratorError):
    code = "invalid_input"


class RunNotFound(OrchestratorError):
    code = "run_not_found"

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"no run has id {run_id!r}; list_runs shows the runs that exist (filter by workspace or name)",
            run_id=run_id,
        )


class RunTerminal(OrchestratorError):
    code = "run_terminal"

    def __init__(self, run_id: str, status: str, refused: str) -> None:
        super().__init__(
            f"run {run_id!r} is {status}: {refused}. Read it with status, or start a new run for new work",
            run_id=run_id,
            status=status,
        )


class KeyConflict(OrchestratorError):
    code = "key_conflict"


class StepFailed(OrchestratorError):
    code = "step_failed"


class ConfigError(OrchestratorError):
    code = "config_error"


class StoreError(OrchestratorError):
    code = "store_error"


class StoreBusy(StoreError):
    code = "store_busy"


class SchemaTooNew(StoreError):
    code = "schema_too_new"

    @classmethod
    def of(cls, location: str, version: int, known: int, other: str) -> SchemaTooNew:
        """The refusal to open a store that a newer release migrated (``other``: "file", "database")."""
        return cls(
            f"the store {location} has schema version {version}, newer than this mcp-orchestrator "
            f"knows ({known}); upgrade mcp-orchestrator, or point --db at another {other}",
            version=version,
        )


def invalid_input_from(exc: ValidationError, what: str = "arguments") -> InvalidInput:
    """One readable sentence per problem, naming the field, the value given and what is expected."""
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        shown = "" if isinstance(given, dict) or error["type"] == "missing" else f" (got {given!r:.80})"
        problems.append(f"{where}: {message}{shown}" if where else message)
    return InvalidInput(f"invalid {what}: " + "; ".join(problems), problems=problems)
