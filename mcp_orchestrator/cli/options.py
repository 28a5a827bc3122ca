"""Command-line options derived from the input models the MCP tools take.

A command names the fields of its input model it offers, and only where the shell wants something
else a flag, a positional, a note, its own default or its own help. Each option's kind (number,
switch, JSON, KEY=VALUE, repeatable, choices) and help (description, default, range) come from the
field, and the parsed values go back through the model: the CLI validates exactly as the tools do,
and a bad value is the same ``invalid_input`` naming the field. argparse itself only checks the
shape of the command line (a number where a number goes), as it always has. A field that names a run
(``Option(run=True)``) takes what a person types for one, resolved to the run's id in one place
(``ModelOptions.resolved``) before the command calls the engine.
"""

from __future__ import annotations

import argparse
import enum
import json
import re
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, JsonValue, ValidationError
from pydantic.fields import FieldInfo

from ..errors import InvalidInput, invalid_input_from

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Option:
    """How one field reads on the command line, where that is not ``--field-name`` with the field's help."""

    field: str
    flag: str = ""  # '--parent', or a positional's metavar ('RUN'); default: '--' + the field's name, with dashes
    note: str = ""  # a sentence added to the field's description, e.g. what '-' or '.' means here
    help: str = ""  # instead of the field's description, where a switch or the shell changes its meaning
    default: Any = None  # the command's own default, where it is not the model's
    rest: bool = False  # every argument after the flag is its value (an argv)
    run: bool = False  # the value names a run: its id, its key or the start of its id (``Runs.resolve``)


def json_value(flag: str, text: str) -> Any:
    """An option's JSON value, or an error naming the option and what to change."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{flag} is not JSON ({exc.msg} at position {exc.pos}): {text!r:.200}") from None
    except RecursionError:
        raise InvalidInput(f"{flag} nests arrays and objects too deep to read; flatten it") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise InvalidInput(f"{flag} cannot be read ({exc}); send a shorter number, or a string") from None


def key_values(flag: str, pairs: list[str]) -> dict[str, str]:
    """Repeated ``KEY=VALUE`` options as a mapping, or an error naming the one without '='."""
    mapping = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput(f"{flag} {pair!r}: expected key=value")
        mapping[key] = value
    return mapping


class ModelOptions(Generic[M]):
    """The options one command takes from one input model, and that model built back from them."""

    def __init__(self, model: type[M], *options: str | Option) -> None:
        self.model = model
        given = [o if isinstance(o, Option) else Option(o) for o in options]
        self._options = [_ModelOption(model, o) for o in given]
        self._flags = {o.field: o.flag for o in self._options}
        self._runs = [o.field for o in given if o.run]
        for option in self._options:
            option.help = _in_shell_terms(option.help, self._flags)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        for option in self._options:
            option.add_to(parser)

    def build(self, args: argparse.Namespace, **settled: Any) -> M:
        """The input model from the options given, and the fields the command ``settled`` itself;
        pydantic validates it (a ValidationError is the command's ``invalid options: ...``)."""
        values = {o.field: o.value(getattr(args, o.field)) for o in self._options}
        values.update(settled)
        try:
            return self.model.model_validate({name: value for name, value in values.items() if value is not None})
        except ValidationError as exc:  # named as typed: --status, RUN, not status.0 or run_id
            flags = {field: flag for field, flag in self._flags.items() if flag.startswith("-")}
            words = partial(_in_shell_terms, flags=flags, bare=True)
            raise invalid_input_from(exc, "options", names=self._flags, said=words) from None

    async def resolved(self, query: M, resolve: Callable[[str], Awaitable[str]]) -> M:
        """``query`` with each run it names (the fields of ``Option(run=True)``) replaced by that run's id;
        ``resolve`` (``Runs.resolve``) fails on an unknown or ambiguous name, listing candidates."""
        update = {}
        for field in self._runs:
            if (text := getattr(query, field)) is not None:
                update[field] = await resolve(text)
        return query.model_copy(update=update)


class _ModelOption:
    """One field as an argparse argument: its kind read once from the field's type."""

    def __init__(self, model: type[BaseModel], option: Option) -> None:
        self.field = option.field
        info = model.model_fields[option.field]
        members = _members(info.annotation)
        items = [_strip(typing.get_args(m)[0]) if typing.get_origin(m) is list else m for m in members]
        scalar = items[0] if items else str
        self.positional = bool(option.flag) and not option.flag.startswith("-")
        self.flag = option.flag or "--" + option.field.replace("_", "-")
        self.rest = option.rest
        self.switch = members == [bool]
        self.switch_action = "store_false" if info.default is True else "store_true"  # the flag flips the default
        self.json = any(m is JsonValue or (isinstance(m, type) and issubclass(m, BaseModel)) for m in members)
        self.mapping = any(typing.get_origin(m) is dict for m in members)
        self.repeated = self.mapping or any(typing.get_origin(m) is list for m in members)
        # One value or a list of them: a flag given once passes the one value (an error then names the field).
        self.one_or_many = self.repeated and not self.mapping and any(typing.get_origin(m) is None for m in members)
        self.choices = _choices(scalar)
        self.number = scalar if scalar in (int, float) else None
        self.default = option.default
        self.required = info.is_required() and not self.positional
        self.metavar = self._metavar(scalar)
        self.help = self._help(info, option)

    def _metavar(self, scalar: Any) -> str:
        if self.positional:
            return self.flag
        if self.choices:
            return "{" + ",".join(self.choices) + "}"
        if self.json:
            return "JSON"
        if self.mapping:
            return "KEY=VALUE"
        if self.rest:
            return "ARGV"
        if scalar is datetime:
            return "TIME"
        if scalar is int:
            return "N"
        if scalar is float and self.field.endswith("_s"):  # the models' name for a duration
            return "SECONDS"
        return self.flag.lstrip("-").replace("-", "_").upper()

    def _help(self, info: FieldInfo, option: Option) -> str:
        text = " ".join(part for part in (option.help or info.description or "", option.note) if part)
        facts = []
        if not info.is_required():
            default = self.default if self.default is not None else info.get_default(call_default_factory=True)
            if default not in (None, "", [], {}) and not isinstance(default, bool):
                facts.append(f"default: {default}")
        if bounds := _bounds(info):
            facts.append(bounds)
        if self.repeated and not self.rest:
            facts.append("repeatable")
        if self.required:
            facts.append("required")
        return text + (f" [{'; '.join(facts)}]" if facts else "")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        help = self.help.replace("%", "%%")  # argparse formats help with %
        if self.positional:
            parser.add_argument(self.field, metavar=self.metavar, help=help)
        elif self.switch:
            parser.add_argument(self.flag, dest=self.field, action=self.switch_action, default=None, help=help)
        else:
            kwargs: dict[str, Any] = {"nargs": argparse.REMAINDER} if self.rest else {}
            if self.repeated and not self.rest:
                kwargs["action"] = "append"
            if self.number is not None:
                kwargs["type"] = self.number
            parser.add_argument(
                self.flag,
                dest=self.field,
                metavar=self.metavar,
                default=self.default,
                required=self.required,
                help=help,
                **kwargs,
            )

    def value(self, given: Any) -> Any:
        """What the command line gave, as the model takes it; None for nothing given."""
        if given is None or given == []:
            return None
        if self.json:
            return json_value(self.flag, given)
        if self.mapping:
            return key_values(self.flag, given)
        if self.one_or_many and isinstance(given, list) and len(given) == 1:
            return given[0]
        return given


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _members(annotation: Any) -> list[Any]:
    """The types a field takes: a union's members (or the one type), Annotated stripped, None left out."""
    annotation = _strip(annotation)
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return [_strip(m) for m in (typing.get_args(annotation) if union else [annotation]) if m is not type(None)]


def _choices(scalar: Any) -> list[str]:
    if isinstance(scalar, type) and issubclass(scalar, enum.Enum):
        return [str(member.value) for member in scalar]
    if typing.get_origin(scalar) is typing.Literal:
        return [str(value) for value in typing.get_args(scalar)]
    return []


def _bounds(info: FieldInfo) -> str:
    """A number's range as the field constrains it, e.g. 'from 1 to 200'."""
    limits = {
        kind: _number(getattr(constraint, kind))
        for constraint in info.metadata
        for kind in ("ge", "gt", "le")
        if getattr(constraint, kind, None) is not None
    }
    if "ge" in limits and "le" in limits:
        return f"from {limits['ge']} to {limits['le']}"
    words = {"ge": "at least", "gt": "above", "le": "at most"}
    return ", ".join(f"{words[kind]} {value}" for kind, value in limits.items())


def _number(value: Any) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _in_shell_terms(text: str, flags: dict[str, str], bare: bool = False) -> str:
    """A field's description with the fields it names (``every_s``, `timezone`) named by their flags;
    ``bare``: one-word names too, and ``begin=true`` as ``--begin`` (for a model's own rule, such as
    "begin=true takes neither output nor error", which quotes no value a person typed)."""

    def flag(found: re.Match[str]) -> str:
        name = next(group for group in found.groups() if group)
        return flags.get(name, found.group(0))

    if bare:
        return re.sub(r"\b([a-z]+(?:_[a-z]+)*)(?:=true)?\b", flag, text)
    return re.sub(r"`(\w+)`|\b([a-z]+(?:_[a-z]+)+)\b", flag, text)
