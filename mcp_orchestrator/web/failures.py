"""The HTTP face's one mapping from errors to answers, installed as the app's exception handlers.

Every route raises; nothing maps errors itself. An ``OrchestratorError`` becomes
``{"error": code, "message"}`` with its class's ``http_status``, which says whose fault it is (400 bad
input, 404 unknown, 409 the run's state forbids it, 503 the store is busy or unusable); a pydantic ``ValidationError``
is bad input naming the field; Starlette's own (404 no route, 405 method) keep their status;
anything unexpected is a JSON 500 ``internal_error``, never a text page.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import OrchestratorError, invalid_input_from


def error_response(code: str, message: str, status: int) -> JSONResponse:
    """The JSON error answer."""
    return JSONResponse({"error": code, "message": message}, status_code=status)


async def orchestrator_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OrchestratorError)
    return error_response(exc.code, exc.message, exc.http_status)


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    error = invalid_input_from(exc, "parameter")
    return error_response(error.code, error.message, error.http_status)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    detail = exc.detail if exc.status_code not in (404, 405) else f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse({"error": code, "message": detail}, status_code=exc.status_code, headers=exc.headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    """Starlette re-raises ``exc`` after this answer, so the server still logs the traceback."""
    message = f"the server failed on {request.method} {request.url.path} ({type(exc).__name__}); see its log"
    return error_response("internal_error", message, 500)


EXCEPTION_HANDLERS = {
    OrchestratorError: orchestrator_error,
    ValidationError: validation_error,
    HTTPException: http_error,
    Exception: internal_error,
}
