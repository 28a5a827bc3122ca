"""The JSON API under ``/api``: what the MCP tools and the CLI show and do, for scripts and pages.

Reads take query parameters validated by the same input models as the tools (repeat a parameter
for a list: ``?status=running&status=waiting``); actions are POSTs with an optional JSON body.
Every answer is the tool's result as JSON. Handlers only raise: ``failures`` maps every error to
``{"error": code, "message"}`` with its status, for every route of the app. POSTs take
``Content-Type: application/json`` only (``auth`` refuses anything else).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import InvalidInput, invalid_input_from
from ..models import (
    Activity,
    CancelRunInput,
    DecideApprovalInput,
    ListApprovalsInput,
    ListEventsInput,
    ListRunsInput,
    ListSchedulesInput,
    RetryRunInput,
    RunId,
    SendMessageInput,
    SetBudgetInput,
    StatusInput,
)
from ..runtime import Engine
from ..views import ACTIVITY_PAGE

_LISTS = {"status", "label"}  # query parameters that may repeat
_CURSOR = r"^[0-9]{1,18}$"

Handler = Callable[[Request], Awaitable[BaseModel]]


class ActivityQuery(BaseModel):
    """``GET /api/runs/{run_id}/activity``: the latest entries, those before a cursor, or those after one."""

    model_config = ConfigDict(extra="forbid")

    run_id: RunId
    limit: int = Field(50, ge=1, le=ACTIVITY_PAGE, description="At most this many entries.")
    before: str | None = Field(None, pattern=_CURSOR, description="The entries before this cursor (older ones).")
    after: str | None = Field(None, pattern=_CURSOR, description="The entries after this cursor (newer ones).")

    @model_validator(mode="after")
    def _one_cursor(self) -> ActivityQuery:
        if self.before is not None and self.after is not None:
            raise ValueError("give before or after, not both: older entries, or newer ones")
        return self


class ActivityPage(BaseModel):
    """A page of a sub-agent's activity timeline, oldest first, with the cursors to page on."""

    run_id: str
    activity: list[Activity] = Field(description="Oldest first. A tool call's entry is updated in place once done.")
    before: str | None = Field(None, description="Pass as before= for older entries; null: there are none.")
    after: str | None = Field(None, description="Pass as after= for newer entries (to poll); null: no entries yet.")
    dropped: int = Field(0, description="Entries dropped, oldest first, to keep the store's cap per run.")


def api_routes(engine: Engine) -> list[Route]:
    async def runs(request: Request) -> BaseModel:
        return await engine.runs.list_runs(_query(ListRunsInput, request, renames={"parent": "parent_run_id"}))

    async def run(request: Request) -> BaseModel:
        query = _query(StatusInput, request, renames={"journal": "journal_limit"})
        return await engine.runs.status(query, budget=engine.max_result_bytes)  # paged as the status tool is

    async def cancel(request: Request) -> BaseModel:
        return await engine.runs.cancel_run(await request_input(CancelRunInput, request))

    async def retry(request: Request) -> BaseModel:
        return await engine.runs.retry_run(await request_input(RetryRunInput, request))

    async def activity(request: Request) -> BaseModel:
        args: ActivityQuery = _query(ActivityQuery, request)
        limit = 0 if args.after is not None else args.limit
        found = await engine.runs.status(
            StatusInput(
                run_id=args.run_id, journal_limit=0, log_lines=0, activity_limit=limit, activity_cursor=args.before
            )
        )
        entries, before = found.activity, found.activity_cursor
        if args.after is not None:
            entries = await engine.runs.activity(args.run_id, args.limit, after=int(args.after))
            before = str(entries[0].seq) if entries else None
        return ActivityPage(
            run_id=found.run.run_id,
            activity=entries,
            before=before,
            after=str(entries[-1].seq) if entries else args.after,
            dropped=found.process.activity_dropped if found.process else 0,
        )

    async def message(request: Request) -> BaseModel:
        return await engine.messages.send(await request_input(SendMessageInput, request), source="api")

    async def budget(request: Request) -> BaseModel:
        return await engine.budgets.set_budget(await request_input(SetBudgetInput, request))

    async def events(request: Request) -> BaseModel:
        return await engine.events.list_events(_query(ListEventsInput, request))

    async def schedules(request: Request) -> BaseModel:
        return await engine.schedules.list(_query(ListSchedulesInput, request))

    async def pause(request: Request) -> BaseModel:
        return await engine.schedules.set_enabled(request.path_params["name"], False)

    async def resume(request: Request) -> BaseModel:
        return await engine.schedules.set_enabled(request.path_params["name"], True)

    async def approvals(request: Request) -> BaseModel:
        return await engine.approvals.list(_query(ListApprovalsInput, request, renames={"run": "run_id"}))

    async def decide(request: Request) -> BaseModel:
        return await engine.approvals.decide(
            await request_input(DecideApprovalInput, request), by="person", source="api"
        )

    return [
        Route("/api/runs", _json(runs), methods=["GET"]),
        Route("/api/runs/{run_id}", _json(run), methods=["GET"]),
        Route("/api/runs/{run_id}/cancel", _json(cancel), methods=["POST"]),
        Route("/api/runs/{run_id}/retry", _json(retry), methods=["POST"]),
        Route("/api/runs/{run_id}/activity", _json(activity), methods=["GET"]),
        Route("/api/runs/{run_id}/messages", _json(message), methods=["POST"]),
        Route("/api/runs/{run_id}/budget", _json(budget), methods=["POST"]),
        Route("/api/events", _json(events), methods=["GET"]),
        Route("/api/schedules", _json(schedules), methods=["GET"]),
        # {name:path}: a name stored before names were restricted may hold '/' (sent as %2F).
        Route("/api/schedules/{name:path}/pause", _json(pause), methods=["POST"]),
        Route("/api/schedules/{name:path}/resume", _json(resume), methods=["POST"]),
        Route("/api/approvals", _json(approvals), methods=["GET"]),
        Route("/api/approvals/{approval_id}/decision", _json(decide), methods=["POST"]),
    ]


def _json(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        result = await handler(request)  # errors go to the app's exception handlers (failures.py)
        return Response(result.model_dump_json(), media_type="application/json")

    return endpoint


def _query(model: type[BaseModel], request: Request, renames: dict[str, str] | None = None) -> Any:
    """The model from the path and the query string (``renames`` maps a parameter to its field)."""
    fields: dict[str, Any] = dict(request.path_params)
    for key in request.query_params:
        values = request.query_params.getlist(key)
        fields[(renames or {}).get(key, key)] = values if key in _LISTS and len(values) > 1 else values[-1]
    return _validated(model, fields)


async def request_input(model: type[BaseModel], request: Request) -> Any:
    """The model from the path and an optional JSON object body (the API's and the dashboard's writes)."""
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object of {model.__name__}'s fields, e.g. {{}}")
    return _validated(model, {**body, **request.path_params})


def _validated(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise invalid_input_from(exc, "parameter") from exc
