"""``POST /events``: events from scripts and webhooks (GitHub's signed form included).

The body is one event ``{"name", "data", "id"}`` or a list of them, authorised by the bearer
token, or by an HMAC-SHA256 signature of the raw body with the webhook secret in
``X-Signature-256`` (or GitHub's ``X-Hub-Signature-256``: the event's name is then
``github.<X-GitHub-Event>``, its data the payload, its id ``X-GitHub-Delivery``). Every event of a
request is stored in one transaction, or none is; a rejected request stores nothing and says why.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..config import ENV_WEBHOOK_SECRET, Settings
from ..engine import Engine
from ..errors import OrchestratorError, invalid_input_from
from ..models import SendEventInput
from .auth import signature_matches

MAX_BODY_BYTES = 4 * 1024 * 1024


def events_endpoint(engine: Engine, settings: Settings) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def post_events(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:  # refused before it is read
            return _refuse(413, "too_large", f"the body is {declared} bytes; the limit is {MAX_BODY_BYTES}")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _refuse(413, "too_large", f"the body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
        signature = request.headers.get("x-hub-signature-256") or request.headers.get("x-signature-256")
        if signature is not None:
            if settings.webhook_secret is None:
                return _refuse(
                    401, "unauthorized", f"a signed request, but no webhook secret is set ({ENV_WEBHOOK_SECRET})"
                )
            if not signature_matches(settings.webhook_secret, body, signature):
                why = "the signature does not match the body (want 'sha256=<hex HMAC-SHA256 of the raw body>')"
                return _refuse(401, "bad_signature", why)
        try:
            payload = json.loads(body)
        except ValueError as exc:
            return _refuse(400, "invalid_json", f"the body is not JSON: {exc}")
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
            error = invalid_input_from(exc, "event")
            return _refuse(422, error.code, error.message)
        try:
            results = await engine.send_events(events, source="webhook")
        except OrchestratorError as exc:
            return _refuse(422 if exc.code == "invalid_input" else 503, exc.code, exc.message)
        dumped = [result.model_dump(mode="json") for result in results]
        return JSONResponse(dumped if isinstance(payload, list) and github_event is None else dumped[0])

    return post_events


def _refuse(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)
