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

Those schemas are made from the models once, not by every server: ``tool_schemas`` makes them, ``schemas.json``
beside this module holds them (``python -m mcp_orchestrator.tools`` writes it, a test checks it is current),
and a server reads them from there. Making them builds every input and result model and takes about a
tenth of a second, which every session and every sub-agent would otherwise wait for before its first call.
"""

from __future__ import annotations

import enum
import functools
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, cast

from mcp import MCPError
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, SkipValidation, ValidationError, create_model

from ..errors import InternalError, InvalidInput, OrchestratorError, invalid_input_from
from ..runtime import Engine
from ..services.sizing import fit
from .schemas import compact_input, compact_output, without_repeats

log = logging.getLogger(__name__)

SCHEMAS_FILE = Path(__file__).with_name("schemas.json")
ToolSchemas = dict[str, Any]  # {"input": the arguments' schema, "output": the result's schema or None}


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
        request = ctx.request_context
        sent = (request.params or {}).get("arguments") or {}
        if not sent.keys() <= arguments.keys():
            named = ", ".join(map(repr, sorted(sent.keys() - arguments.keys())))
            error = InvalidInput(f"unknown argument(s) {named}; {tool.fn.__name__} takes {', '.join(arguments)}")
            raise ToolError(error_text(error))
        given = {name: value for name, value in arguments.items() if value is not ABSENT}

        async def progress(done: float, total: float, message: str) -> None:
            await ctx.report_progress(done, total, message)  # a no-op unless the client asked for progress

        app = cast(AppContext, request.lifespan_context)  # what the server's lifespan yields
        extra = (progress,) if tool.blocking else ()
        result = await call_primitive(tool.fn, app.engine, tool.input_model, given, *extra)
        return result.model_dump_json(exclude_none=True) if tool.text else result

    handler.__name__ = tool.fn.__name__
    handler.__doc__ = inspect.cleandoc(tool.fn.__doc__ or "")
    return handler


def engine_tools() -> list[Tool]:
    """The MCP tools, for ``MCPServer(tools=...)``: each one's schemas read from ``schemas.json``, and its
    validation left to the input model (see ``_lenient``). Built directly rather than by the SDK's
    ``Tool.from_function``, which would make a model of the handler's signature and its schema for every
    tool, only for both to be replaced."""
    schemas: dict[str, ToolSchemas] = json.loads(SCHEMAS_FILE.read_text(encoding="utf-8"))
    tools = []
    for tool in TOOLS:
        handler = _as_mcp_function(tool)
        schema = schemas[handler.__name__]
        metadata = FuncMetadata(
            arg_model=_lenient(f"{handler.__name__}Arguments", tool.input_model),
            output_schema=schema["output"],  # the answers are still checked against result_model
            output_model=None if tool.text else tool.result_model,
        )
        mcp_tool = Tool(
            fn=handler,
            name=handler.__name__,
            title=tool.title,
            description=handler.__doc__ or "",
            parameters=schema["input"],
            fn_metadata=metadata,
            is_async=True,
            context_kwarg="ctx",
            annotations=tool.annotations,
        )
        tools.append(mcp_tool)
    return tools


def tool_schemas() -> dict[str, ToolSchemas]:
    """Every tool's schemas as ``tools/list`` shows them, made from its models: what ``schemas.json`` holds."""
    inputs = without_repeats([_arguments_schema(tool.input_model) for tool in TOOLS])
    return {
        tool.fn.__name__: {
            "input": arguments,
            "output": None if tool.text else compact_output(tool.result_model.model_json_schema()),
        }
        for tool, arguments in zip(TOOLS, inputs, strict=True)
    }


def schemas_text(schemas: dict[str, ToolSchemas]) -> str:
    """``schemas`` as ``schemas.json`` holds them (one stable text, so a change shows as a diff)."""
    return json.dumps(schemas, indent=1, ensure_ascii=False) + "\n"


def _arguments_schema(input_model: type[BaseModel]) -> dict[str, Any]:
    """The tool's input schema: its input model's, compacted. Unknown arguments are refused by the handler,
    which names them (``_as_mcp_function``); the schema leaves that unsaid, as it always has."""
    schema = compact_input(input_model.model_json_schema(by_alias=True))
    schema.pop("additionalProperties", None)
    return schema


class _LenientArguments(ArgModelBase):
    """The base of the SDK's argument models: built on a tool's first call, not when the server starts."""

    model_config = ConfigDict(defer_build=True)


def _lenient(name: str, input_model: type[BaseModel]) -> type[ArgModelBase]:
    """The SDK's argument model with no check of its own: every field optional (``ABSENT`` when not
    sent) and unvalidated, so the input model names every problem, a missing field included, in one
    ``invalid_input`` text instead of the SDK's pydantic dump. Field types stay, as the SDK reads them
    to decide which string arguments to parse as JSON."""
    fields: dict[str, Any] = {
        field_name: (Annotated[field.annotation, SkipValidation], ABSENT)
        for field_name, field in input_model.model_fields.items()
    }
    return create_model(name, __base__=_LenientArguments, **fields)
