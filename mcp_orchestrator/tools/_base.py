"""Turning engine primitives into MCP tools.

A primitive is written once as ``async def name(engine, args: InputModel) -> ResultModel`` with a
docstring for the model. ``engine_tool`` registers it; ``engine_tools`` gives the MCP server a
function whose flat keyword parameters are the input model's fields (descriptions and
constraints included), so the tool schema, the validation and the engine share one definition.
The input model alone validates (the SDK's own argument check is made lenient), so every refusal
is one ``invalid_input: ...`` text; engine errors become ``ToolError``s whose text the model can
act on, and anything unforeseen an ``internal_error: ...`` naming the tool, its traceback logged.
A ``text`` tool answers with one text block, its result's JSON, and no structured content: what a
harness that reads the text alone expects (Claude Code's permission prompt tool). Every other answer
is fitted to the result budget (``services.sizing.fit``), and the schemas sent in ``tools/list`` are
compacted (``schemas``).
"""

from __future__ import annotations

import enum
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, cast

from mcp import MCPError
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field, SkipValidation, ValidationError, create_model

from ..errors import InternalError, InvalidInput, OrchestratorError, invalid_input_from
from ..runtime import Engine
from ..services.sizing import fit
from .schemas import compact_input, compact_output, without_repeats

log = logging.getLogger(__name__)


class _Absent(enum.Enum):
    """An argument the caller did not send (left for the input model to default or require)."""

    ABSENT = "absent"


ABSENT = _Absent.ABSENT


@dataclass(frozen=True)
class AppContext:
    """What the server's lifespan hands every tool call."""

    engine: Engine


Primitive = Callable[..., Awaitable[BaseModel]]


@dataclass(frozen=True)
class EngineTool:
    fn: Primitive
    input_model: type[BaseModel]
    result_model: type[BaseModel]
    title: str
    annotations: ToolAnnotations
    blocking: bool = False  # takes a progress callback as a third argument
    text: bool = False  # answers with one text block (the result's JSON, nulls left out), no structured content


TOOLS: list[EngineTool] = []

READS = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True)
SAFE_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True)


def engine_tool(
    input_model: type[BaseModel],
    result_model: type[BaseModel],
    *,
    title: str,
    annotations: ToolAnnotations,
    blocking: bool = False,
    text: bool = False,
    whole: bool = False,
) -> Callable[[Primitive], Primitive]:
    """Register a primitive as a tool. Its answers are fitted to the result budget (``sizing.fit``)
    unless ``whole``: an answer that must come whole, bounded by the payload limit alone."""

    def register(fn: Primitive) -> Primitive:
        sized = fn if whole or text else _within_budget(fn)
        TOOLS.append(EngineTool(sized, input_model, result_model, title, annotations, blocking, text))
        return fn

    return register


def _within_budget(fn: Primitive) -> Primitive:
    @functools.wraps(fn)
    async def sized(engine: Engine, args: BaseModel, *extra: Any) -> BaseModel:
        return fit(await fn(engine, args, *extra), engine.max_result_bytes)

    return sized


def error_text(exc: OrchestratorError) -> str:
    return f"{exc.code}: {exc.message}"


async def call_primitive(
    fn: Primitive, engine: Engine, input_model: type[BaseModel], arguments: dict[str, Any], *extra: Any
) -> BaseModel:
    try:
        args = input_model.model_validate(arguments)
        return await fn(engine, args, *extra)
    except ValidationError as exc:
        raise ToolError(error_text(invalid_input_from(exc))) from exc
    except OrchestratorError as exc:
        raise ToolError(error_text(exc)) from exc
    except MCPError:
        raise
    except Exception as exc:  # a bug: say so with the tool's name, keep the traceback on the server
        log.error("tool %s failed unexpectedly", fn.__name__, exc_info=exc)
        error = InternalError(
            f"{fn.__name__} failed with {type(exc).__name__}, which it should not; the server's log (stderr) "
            "has the traceback. Please report it with the arguments",
            tool=fn.__name__,
        )
        raise ToolError(error_text(error)) from exc


def _as_mcp_function(tool: EngineTool) -> Callable[..., Awaitable[BaseModel | str]]:
    async def handler(ctx: Context, **arguments: Any) -> BaseModel | str:
        # The SDK drops arguments the schema does not name; a misspelt one ("outptu") would
        # silently become a default, so name it instead.
        sent = (ctx.request_context.params or {}).get("arguments") or {}
        given = {name: value for name, value in arguments.items() if value is not ABSENT}
        unknown = sorted(set(sent) - set(arguments))
        if unknown:
            named = ", ".join(map(repr, unknown))
            error = InvalidInput(f"unknown argument(s) {named}; {tool.fn.__name__} takes {', '.join(arguments)}")
            raise ToolError(error_text(error))

        async def progress(done: float, total: float, message: str) -> None:
            await ctx.report_progress(done, total, message)  # a no-op unless the client asked for progress

        app = cast(AppContext, ctx.request_context.lifespan_context)  # what the server's lifespan yields
        extra = (progress,) if tool.blocking else ()
        result = await call_primitive(tool.fn, app.engine, tool.input_model, given, *extra)
        return result.model_dump_json(exclude_none=True) if tool.text else result

    parameters = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    annotations: dict[str, Any] = {"ctx": Context}
    for name, field in tool.input_model.model_fields.items():
        hint = Annotated[(field.annotation, *field.metadata, Field(description=field.description))]  # type: ignore[name-defined]  # built at run time
        default = inspect.Parameter.empty if field.is_required() else field.get_default(call_default_factory=True)
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=hint, default=default))
        annotations[name] = hint
    returns = str if tool.text else tool.result_model
    annotations["return"] = returns
    handler.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    handler.__annotations__ = annotations
    handler.__name__ = tool.fn.__name__
    handler.__doc__ = inspect.cleandoc(tool.fn.__doc__ or "")
    return handler


def engine_tools() -> list[Tool]:
    """The MCP tools, for ``MCPServer(tools=...)``: each one's schema from its input model, and its
    validation left to that model (see ``_lenient``)."""
    tools = []
    for tool in TOOLS:
        mcp_tool = Tool.from_function(
            _as_mcp_function(tool),
            title=tool.title,
            annotations=tool.annotations,
            structured_output=False if tool.text else None,
        )
        mcp_tool.fn_metadata.arg_model = _lenient(mcp_tool.fn_metadata.arg_model)  # the schema is already built
        mcp_tool.parameters = compact_input(mcp_tool.parameters)
        if mcp_tool.fn_metadata.output_schema is not None:  # the answers are still checked against result_model
            mcp_tool.fn_metadata.output_schema = compact_output(mcp_tool.fn_metadata.output_schema)
        tools.append(mcp_tool)
    for mcp_tool, schema in zip(tools, without_repeats([tool.parameters for tool in tools]), strict=True):
        mcp_tool.parameters = schema
    return tools


def _lenient(strict: type[ArgModelBase]) -> type[ArgModelBase]:
    """The SDK's argument model with no check of its own: every field optional (``ABSENT`` when not
    sent) and unvalidated, so the input model names every problem, a missing field included, in one
    ``invalid_input`` text instead of the SDK's pydantic dump. Field types stay, as the SDK reads them
    to decide which string arguments to parse as JSON."""
    fields: dict[str, Any] = {
        name: (Annotated[field.annotation, SkipValidation], ABSENT) for name, field in strict.model_fields.items()
    }
    return create_model(strict.__name__, __base__=ArgModelBase, **fields)
