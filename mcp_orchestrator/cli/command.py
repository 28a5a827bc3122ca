"""What every command shares: its registration with the common options, and one engine per invocation."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from pydantic import BaseModel

from ..config import ENV_CONFIG, ENV_DB, Settings
from ..runtime import Engine, open_engine
from .options import ModelOptions

if TYPE_CHECKING:
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Commands = argparse._SubParsersAction  # what add_subparsers returns (not subscriptable at run time)

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")
Handler = Callable[[argparse.Namespace, Settings], int]
"""A command: its parsed arguments and the settings in, its exit code out."""

_COMMON = argparse.ArgumentParser(add_help=False)
_COMMON.add_argument("--db", metavar="PATH|URL", help=f"SQLite file or postgresql:// URL (overrides {ENV_DB})")
_COMMON.add_argument("--config", metavar="FILE", help=f"agent profiles and limits, TOML (overrides {ENV_CONFIG})")
_COMMON.add_argument("--no-color", action="store_true", help="no colours on a terminal (as NO_COLOR does)")
_JSON = argparse.ArgumentParser(add_help=False)
_JSON.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")


def add_command(
    commands: Commands,
    name: str,
    handler: Handler,
    options: ModelOptions[Any] | None = None,
    *,
    help: str,
    description: str,
    json: bool = True,
) -> argparse.ArgumentParser:
    """A command with --db, --config and (unless it prints no result) --json, and the options of its
    input model; the parser is returned for options of its own."""
    parents = [_COMMON, _JSON] if json else [_COMMON]
    parser = commands.add_parser(name, parents=parents, help=help, description=description)
    if options is not None:
        options.add_to(parser)
    parser.set_defaults(handler=handler)
    return parser


def with_engine(settings: Settings, call: Callable[[Engine], Awaitable[Any]]) -> Any:
    """``call``'s result on an engine opened for it: a command's one visit to the store."""

    async def run() -> Any:
        async with open_engine(settings) as engine:
            return await call(engine)

    return asyncio.run(run())


def with_query(settings: Settings, options: ModelOptions[M], query: M, call: Callable[[Engine, M], Awaitable[R]]) -> R:
    """``call(engine, query)`` with the runs ``query`` names resolved to their ids first (the fields that
    ``options`` marks ``run=True``): how a command that takes a run reaches the engine."""

    async def resolved(engine: Engine) -> R:
        return await call(engine, await options.resolved(query, engine.runs.resolve))

    result: R = with_engine(settings, resolved)
    return result
