"""The tools' JSON schemas, made compact: every client reads ``tools/list`` at the start of every
session, and what a model is shown of it costs tokens in every one of them.

pydantic's schemas carry what a model never needs: a ``title`` on every property (``"Run Id"`` beside
``run_id``), ``anyOf [..., {"type": "null"}]`` with ``default: null`` on each optional argument,
and output schemas as detailed as the inputs (the same Run, Step and Wait models, described field by
field, in a dozen tools). Compacted, an input schema keeps what a call must get right: types,
required fields, enums, constraints, defaults and one line per field; an optional argument is its
type alone (leaving it out means null). An output schema keeps the shape of the answer: each field's
type, what is required and what may be null, and enums; the models it holds are objects, and there is
no prose. The SDK still validates every answer against its pydantic model.
"""

from __future__ import annotations

from typing import Any

_NAMED = ("properties", "$defs", "patternProperties")  # name -> schema
_LISTED = ("anyOf", "oneOf", "allOf", "prefixItems")  # [schema, ...]
_SINGLE = ("items", "additionalProperties", "not")  # schema
# What an output schema keeps of a property: its shape, not its prose or the checks made on input.
_OUTPUT_KEYS = {"type", "enum", "const", "items", "properties", "required", "anyOf", "oneOf", "$ref", "$defs"}
_OUTPUT_KEYS |= {"additionalProperties", "prefixItems"}
_NULL = {"type": "null"}
_REF = "#/$defs/"


def compact_input(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's input schema without titles, null alternatives of optional arguments, or empty
    defaults; definitions that say nothing (any JSON) inlined."""
    return _inline_empty(_compact(schema, output=False))


def compact_output(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's output schema as its shape only (see the module docstring)."""
    shaped = _inline_empty(_compact(schema, output=True))
    defs = shaped.pop("$defs", {})
    # The result's own fields keep their shape; the models they hold (Run, Step ...) become objects, and
    # enums stay: the descriptions say what the models hold, and no client shows output schemas to a model.
    near = {name for name in _refs(shaped) if "enum" in defs.get(name, {})}
    kept = {name: _flatten(body, near) for name, body in defs.items() if name in near}
    shaped = _flatten(shaped, near)
    return {**shaped, "$defs": kept} if kept else shaped


def _compact(node: Any, *, output: bool) -> Any:
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if (key == "title" and not isinstance(value, dict)) or key == "discriminator":
            continue  # (the discriminator is OpenAPI's, not JSON Schema's: clients differ in what they make of it)
        if output and key not in _OUTPUT_KEYS:
            continue
        if key in _NAMED and isinstance(value, dict):
            out[key] = {name: _compact(item, output=output) for name, item in value.items()}
        elif key in _LISTED and isinstance(value, list):
            # Arguments and answers are checked against their models already: "any of" (not pydantic's
            # "exactly one of", which two alternatives flattened alike would both match) keeps it true.
            out["anyOf" if key == "oneOf" else key] = [_compact(item, output=output) for item in value]
        elif key in _SINGLE and isinstance(value, dict):
            out[key] = _compact(value, output=output)
        else:
            out[key] = value
    if output and out.get("additionalProperties") is False:
        del out["additionalProperties"]
    options = out.get("anyOf")
    if isinstance(options, list) and _NULL in options:
        others = [option for option in options if option != _NULL]
        if not output and out.get("default", ...) is None:  # optional: leaving it out says null
            del out["anyOf"], out["default"]
            out = {**(others[0] if len(others) == 1 else {"anyOf": others}), **out}
        elif output and len(others) == 1 and _nullable(others[0]) is not None:
            del out["anyOf"]
            out = {**_nullable(others[0]), **out}  # type: ignore[dict-item]  # checked just above
    if not output and "default" in out and out["default"] in (None, {}, []):
        del out["default"]  # leaving the argument out says as much
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any] | None:
    """``schema`` that also takes null, written without anyOf; None when it is not a plain type."""
    kind = schema.get("type")
    if not isinstance(kind, str):
        return None
    nullable = {**schema, "type": [kind, "null"]}
    if "enum" in schema:
        nullable["enum"] = [*schema["enum"], None]
    if "const" in schema:
        return None
    return nullable


def _inline_empty(schema: dict[str, Any]) -> dict[str, Any]:
    """References to definitions that allow anything (pydantic's JsonValue: ``{}``) made ``{}``."""
    defs = schema.get("$defs", {})
    empty = {f"{_REF}{name}" for name, body in defs.items() if body == {}}
    if not empty:
        return schema

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("$ref") in empty:
                return {key: value for key, value in node.items() if key != "$ref"}
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    out = walk(schema)
    out["$defs"] = {name: body for name, body in out["$defs"].items() if body != {}}
    if not out["$defs"]:
        del out["$defs"]
    return out


def without_repeats(schemas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input schemas whose definitions ($defs) drop the descriptions of their fields that some tool's
    own argument already gives word for word (schedule's spawn action repeats spawn_subagent's)."""
    said = {
        prop.get("description")
        for schema in schemas
        for prop in schema.get("properties", {}).values()
        if isinstance(prop, dict)
    }

    def unsaid(body: dict[str, Any]) -> dict[str, Any]:
        props = {
            name: {key: value for key, value in prop.items() if key != "description" or value not in said}
            for name, prop in body.get("properties", {}).items()
        }
        return {**body, "properties": props} if "properties" in body else body

    return [
        {**schema, "$defs": {name: unsaid(body) for name, body in schema["$defs"].items()}}
        if "$defs" in schema
        else schema
        for schema in schemas
    ]


def _refs(node: Any) -> set[str]:
    """The definitions ``node`` names directly."""
    if isinstance(node, dict):
        found = {node["$ref"].removeprefix(_REF)} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node))
    return set()


def _flatten(node: Any, kept: set[str]) -> Any:
    """``node`` with references to definitions not in ``kept`` made plain objects."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.removeprefix(_REF) not in kept:
            return {"type": "object"}
        options = node.get("anyOf")
        if isinstance(options, list):  # a union of models below the kept ones: an object (or null)
            flat = [_flatten(option, kept) for option in options]
            if all(option in ({"type": "object"}, _NULL) for option in flat):
                return {"type": ["object", "null"] if _NULL in flat else "object"}
        return {key: _flatten(value, kept) for key, value in node.items()}
    if isinstance(node, list):
        return [_flatten(item, kept) for item in node]
    return node
