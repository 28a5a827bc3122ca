"""``POST /events``: events from scripts and webhooks (GitHub's signed form included).

The body is one event ``{"name", "data", "id"}`` or a list of them, as JSON, authorised by the
bearer token, or by an HMAC-SHA256 signature of the raw body with the webhook secret in
``X-Signature-256`` (or GitHub's ``X-Hub-Signature-256``: the event's name is then
``github.<X-GitHub-Event>``, its data the payload, its id ``X-GitHub-Delivery``). ``auth``
verifies the signature and ``limits`` the body's size before this handler runs. Every event of a
request is stored in one transaction, or none is; a rejected request stores nothing and says why.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import invalid_input_from
from ..models import SendEventInput
from ..runtime import Engine
from .failures import error_response


def events_endpoint(engine: Engine) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def post_events(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested past the parser's depth
            return error_response("invalid_json", f"the body is not JSON: {exc}", 400)
        github_event = request.headers.get("x-github-event")
        if github_event is not None:
            raw: list[Any] = [
                {"name": f"github.{github_event}", "data": payload, "id": request.headers.get("x-github-delivery")}
            ]
        else:
            raw = payload if isinstance(payload, list) else [payload]
        try:
            events = [SendEventInput.model_validate(item) for item in raw]
        except ValidationError as exc:
            raise invalid_input_from(exc, "event") from None
        results = await engine.events.send_events(events, source="webhook")  # errors: the app's handlers
        dumped = [result.model_dump(mode="json") for result in results]
        return JSONResponse(dumped if isinstance(payload, list) and github_event is None else dumped[0])

    return post_events
