"""Permission rules in Claude Code's syntax, and the policy that decides a sub-agent's tool call first.

Pure: a rule is parsed once (when the config file is loaded, or a decision names one) and matched
against one call (tool name, input, the agent's cwd and worktree). Nothing here reads the store.

Rules: ``Tool`` (every call of it) or ``Tool(spec)``.
- ``Bash``: an exact command, ``prefix:*`` (the command is the prefix, or starts with it and a
  space), or a glob where ``*`` spans anything. A command line of several commands (``a && b``,
  ``a; b``, ``a | b``) is allowed only when every command in it is; one that substitutes commands
  (backquotes, ``$(``), redirects into files or opens a subshell is never allowed by a prefix or a
  glob (a person sees it). Deny and ask rules match if any command in the line matches.
- File tools (Read, Edit, Write, MultiEdit, NotebookEdit, Glob, Grep): gitignore-like path
  patterns. ``//path`` is absolute, ``~/path`` in the home directory, ``./path``, ``/path`` and a
  bare ``path`` relative to the agent's cwd; ``**`` spans directories, ``*`` and ``?`` do not; a
  bare name without ``/`` (``*.env``) matches at any depth; a pattern naming a directory covers
  what is inside it. Paths are compared with symlinks and ``..`` resolved.
- ``WebFetch(domain:example.com)`` (that host), ``WebFetch(domain:*.example.com)`` (its subdomains).
- MCP tools: ``mcp__server__tool``, or ``mcp__server`` / ``mcp__server__*`` (all of a server's tools).
A rule names one tool: ``Edit`` rules do not cover ``Write``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

RULE_MAX = 4096
BASH = "Bash"
FILE_TOOLS = {
    "Read": "file_path",
    "Edit": "file_path",
    "Write": "file_path",
    "MultiEdit": "file_path",
    "NotebookEdit": "notebook_path",
    "Glob": "path",  # a directory searched; the cwd when not given
    "Grep": "path",
}
EDIT_TOOLS = frozenset({"Edit", "Write", "MultiEdit", "NotebookEdit"})
WEB_FETCH = "WebFetch"
_RULE = re.compile(r"(?P<tool>[A-Za-z][A-Za-z0-9_.-]*(?:__\*)?)(?:\((?P<spec>.*)\))?", re.DOTALL)
_DOMAIN = re.compile(r"(?:\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)*[A-Za-z0-9-]{1,63}")
# Shell syntax a prefix or a glob cannot vouch for: command and process substitution, line breaks.
_OPAQUE = ("`", "$(", "<(", ">(", "\n", "\r")
# Redirections that write no file: output joined to another stream, or thrown away.
_HARMLESS_REDIRECT = re.compile(r"(?<!\S)(?:[0-9]?>&[0-9]|&?[0-9]?>>?\s*/dev/null)(?!\S)")
_SEPARATORS = frozenset({";", "&", "&&", "|", "||", "|&"})
_OPERATOR_CHARS = set("();<>|&")
_LOOSE_SPLIT = re.compile(r"[;&|`()<>\n\r]+|\$\(")


@dataclass(frozen=True)
class Rule:
    """One parsed rule; ``text`` as written."""

    text: str
    tool: str
    spec: str | None = None
    server: bool = False  # mcp__server or mcp__server__*: every tool of that server


def parse_rule(text: str) -> Rule:
    """The rule ``text`` parsed, or ValueError saying what is wrong with it and how to write it."""
    if not isinstance(text, str):
        raise ValueError(f"a permission rule is text, e.g. 'Bash(git:*)'; got {type(text).__name__}")
    shown = f"permission rule {text[:100]!r}"
    if not text or len(text) > RULE_MAX:
        raise ValueError(f"{shown}: a rule has 1 to {RULE_MAX} characters")
    if "\x00" in text:
        raise ValueError(f"{shown}: a rule cannot hold a NUL character")
    found = _RULE.fullmatch(text)
    if found is None:
        raise ValueError(
            f"{shown} is not a rule: write a tool name, optionally with a spec in parentheses, e.g. 'Edit', "
            "'Bash(npm test:*)', 'Read(./src/**)', 'WebFetch(domain:example.com)', 'mcp__github'"
        )
    tool, spec = found["tool"], found["spec"]
    server = tool.startswith("mcp__") and (tool.endswith("__*") or "__" not in tool[5:])
    if tool.endswith("__*") and not server:
        raise ValueError(f"{shown}: only an MCP server's tools can be named with '__*', e.g. 'mcp__github__*'")
    if tool.startswith("mcp__") and (len(tool.removesuffix("__*")) <= 5 or spec is not None):
        raise ValueError(f"{shown}: an MCP rule is 'mcp__server' or 'mcp__server__tool', without a spec")
    if spec is None:
        return Rule(text, tool.removesuffix("__*"), None, server)
    if not spec.strip():
        raise ValueError(f"{shown} has an empty spec: write the tool alone ('{tool}') for every call of it")
    if tool == BASH:
        if spec.endswith(":*") and "*" in spec[:-2]:
            raise ValueError(f"{shown}: a 'prefix:*' rule takes a plain prefix, without '*' in it")
    elif tool in FILE_TOOLS:
        _check_path_pattern(shown, spec)
    elif tool == WEB_FETCH:
        domain = spec.removeprefix("domain:")
        if not spec.startswith("domain:") or not _DOMAIN.fullmatch(domain):
            raise ValueError(
                f"{shown}: a WebFetch rule is 'WebFetch(domain:example.com)' or 'WebFetch(domain:*.example.com)'"
            )
    else:
        raise ValueError(
            f"{shown}: only Bash, WebFetch and the file tools ({', '.join(FILE_TOOLS)}) take a spec; "
            f"write '{tool}' for every call of it"
        )
    return Rule(text, tool, spec)


def _check_path_pattern(shown: str, pattern: str) -> None:
    parts = _pattern_parts(pattern)[1]
    wild = next((i for i, part in enumerate(parts) if _is_wild(part)), len(parts))
    if ".." in parts[wild:]:
        raise ValueError(f"{shown}: '..' may only come before the first wildcard of a path pattern")


def _rule_text(value: str) -> str:
    parse_rule(value)
    return value


RuleText = Annotated[str, AfterValidator(_rule_text)]


class PermissionPolicy(BaseModel):
    """What a profile's sub-agents may do without asking (``[profiles.NAME.permissions]``)."""

    model_config = ConfigDict(extra="forbid")

    allow: list[RuleText] = Field(default_factory=list, description="Calls allowed without asking.")
    deny: list[RuleText] = Field(default_factory=list, description="Calls always refused (checked first).")
    ask: list[RuleText] = Field(default_factory=list, description="Calls always asked of a person.")
    default: Literal["ask", "allow", "deny"] = Field("ask", description="For a call no rule covers.")
    worktree_edits: Literal["ask", "allow"] = Field(
        "allow", description="Edits (Edit, Write, MultiEdit, NotebookEdit) inside the agent's own git worktree."
    )


class ApprovalsConfig(BaseModel):
    """How long a permission request waits (``[approvals]``)."""

    model_config = ConfigDict(extra="forbid")

    wait_s: float = Field(
        300.0,
        ge=0,
        le=3600,
        description="How long the permission tool blocks for a decision before telling the agent to exit and wait.",
    )
    expire_s: float = Field(
        86_400.0, ge=1, le=31_536_000, description="An undecided request is denied (by timeout) after this long."
    )


@dataclass(frozen=True)
class Call:
    """One tool call asked about: where the agent works decides what its relative paths mean."""

    tool: str
    input: Any
    cwd: str
    home: str
    worktree: str | None = None


@dataclass(frozen=True)
class Verdict:
    behavior: Literal["allow", "deny", "ask"]
    reason: str  # e.g. "deny rule 'Bash(rm:*)'", "the default", "an edit inside the worktree"
    rule: str | None = None


def evaluate(policy: PermissionPolicy, call: Call, granted: Sequence[str] = (), refused: Sequence[str] = ()) -> Verdict:
    """The policy's answer: deny rules, ask rules, allow rules, then the rules decided for this run
    (``refused`` first, then ``granted``), edits inside the worktree, and the default."""
    if (hit := _first(policy.deny, call)) is not None:
        return Verdict("deny", f"deny rule {hit!r}", hit)
    if (hit := _first(policy.ask, call)) is not None:
        return Verdict("ask", f"ask rule {hit!r}", hit)
    if (hit := _allowed(policy.allow, call)) is not None:
        return Verdict("allow", f"allow rule {hit!r}", hit)
    if (hit := _first(refused, call)) is not None:
        return Verdict("deny", f"rule {hit!r} denied for this run", hit)
    if (hit := _allowed(granted, call)) is not None:
        return Verdict("allow", f"rule {hit!r} allowed for this run", hit)
    if policy.worktree_edits == "allow" and in_worktree(call):
        return Verdict("allow", "an edit inside the agent's worktree")
    return Verdict(policy.default, "the default")


def _first(texts: Sequence[str], call: Call) -> str | None:
    """The first rule that matches the call as deny and ask rules match: any command of a command
    line, and a path or a URL that cannot be read (when in doubt, refuse or ask)."""
    for text in texts:
        rule = _parsed(text)
        if rule is not None and _tool_matches(rule, call.tool) and (rule.spec is None or _matches_loosely(rule, call)):
            return text
    return None


def _allowed(texts: Sequence[str], call: Call) -> str | None:
    """The rule that allows the call (for a command line of several commands, the first of those
    that together allow every one), or None."""
    rules = [rule for text in texts if (rule := _parsed(text)) is not None and _tool_matches(rule, call.tool)]
    for rule in rules:
        if rule.spec is None:
            return rule.text
    if call.tool == BASH:
        return _bash_allowed(rules, call.input)
    for rule in rules:
        if call.tool in FILE_TOOLS:
            target = target_path(call)
            if target is not None and _path_matches(rule.spec or "", target, call):
                return rule.text
        elif call.tool == WEB_FETCH and _domain_matches(rule.spec or "", call.input, loose=False):
            return rule.text
    return None


def _parsed(text: str) -> Rule | None:
    try:
        return parse_rule(text)
    except ValueError:
        return None  # a stored rule from a looser release: it matches nothing


def _tool_matches(rule: Rule, tool: str) -> bool:
    return tool.startswith(rule.tool + "__") if rule.server else tool == rule.tool


def _matches_loosely(rule: Rule, call: Call) -> bool:
    spec = rule.spec or ""
    if call.tool == BASH:
        command = _mapping(call.input).get("command")
        if not isinstance(command, str):
            return True
        parts = command_parts(command)
        pieces = parts if parts is not None else [_words(p) for p in _LOOSE_SPLIT.split(command) if p.strip()]
        return _bash_rule_matches(spec, command.strip()) or any(_bash_rule_matches(spec, p) for p in pieces)
    if call.tool in FILE_TOOLS:
        target = target_path(call)
        return target is None or _path_matches(spec, target, call)
    if call.tool == WEB_FETCH:
        return _domain_matches(spec, call.input, loose=True)
    return False


# Bash.


def command_parts(command: str) -> list[str] | None:
    """The simple commands of a command line, each as its words joined by single spaces (quotes
    kept), or None when it holds what no prefix can vouch for: a substitution, a line break, a
    redirection into a file, a subshell or unbalanced quotes."""
    if any(mark in command for mark in _OPAQUE):
        return None
    lexer = shlex.shlex(_HARMLESS_REDIRECT.sub(" ", command), posix=False, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:
        return None
    parts: list[list[str]] = [[]]
    for token in tokens:
        if set(token) <= _OPERATOR_CHARS:
            if token not in _SEPARATORS:
                return None  # a redirection or a subshell
            parts.append([])
        else:
            parts[-1].append(token)
    return [" ".join(words) for words in parts if words]


def _words(text: str) -> str:
    return " ".join(text.split())


def _bash_rule_matches(spec: str, command: str) -> bool:
    """Whether the Bash rule's spec matches one command (already split from its line)."""
    if spec.endswith(":*"):
        prefix = _words(spec[:-2])
        return command == prefix or command.startswith(prefix + " ")
    if "*" in spec:
        pattern = ".*".join(re.escape(piece) for piece in _words(spec).split("*"))
        return re.fullmatch(pattern, command, re.DOTALL) is not None
    return command == spec.strip() or command == _words(spec)


def _bash_allowed(rules: list[Rule], value: Any) -> str | None:
    command = _mapping(value).get("command")
    if not isinstance(command, str):
        return None
    for rule in rules:  # an exact rule: the very command line a person saw
        spec = rule.spec or "*"
        if "*" not in spec and command.strip() == spec.strip():
            return rule.text
    parts = command_parts(command)
    if not parts:
        return None
    first = None
    for part in parts:
        hit = next((rule.text for rule in rules if _bash_rule_matches(rule.spec or "", part)), None)
        if hit is None:
            return None
        first = first or hit
    return first


# Paths.


def target_path(call: Call) -> str | None:
    """The absolute path a file tool's call acts on (symlinks and '..' resolved), or None when its
    input does not name one a rule can judge."""
    field = FILE_TOOLS.get(call.tool)
    if field is None:
        return None
    value = _mapping(call.input).get(field)
    if value is None and field == "path":
        value = call.cwd
    if not isinstance(value, str) or not value or "\x00" in value or len(value) > 4096:
        return None
    try:
        return os.path.realpath(os.path.join(call.cwd, os.path.expanduser(value)))
    except (OSError, ValueError):
        return None


def in_worktree(call: Call) -> bool:
    """An edit tool's call on a file inside the agent's worktree (not in its ``.git``)."""
    if call.worktree is None or call.tool not in EDIT_TOOLS:
        return False
    target = target_path(call)
    if target is None:
        return False
    root = os.path.realpath(call.worktree)
    inside = os.path.relpath(target, root)
    if inside == os.curdir or inside == os.pardir or inside.startswith(os.pardir + os.sep):
        return False
    return ".git" not in inside.split(os.sep)


def _pattern_parts(pattern: str) -> tuple[str, list[str]]:
    """(where the pattern is anchored: 'root', 'home' or 'cwd'; its parts)."""
    if pattern.startswith("//"):
        anchor, rest = "root", pattern[2:]
    elif pattern == "~" or pattern.startswith("~/"):
        anchor, rest = "home", pattern[2:]
    elif pattern.startswith("./"):
        anchor, rest = "cwd", pattern[2:]
    else:
        anchor, rest = "cwd", pattern.removeprefix("/")
    return anchor, [part for part in rest.split("/") if part and part != "."]


def _is_wild(part: str) -> bool:
    return "*" in part or "?" in part


def _path_matches(pattern: str, target: str, call: Call) -> bool:
    """Whether the path pattern covers ``target`` (or a directory it is in)."""
    anchor, parts = _pattern_parts(pattern)
    base = {"root": os.sep, "home": call.home, "cwd": call.cwd}[anchor]
    # gitignore's rule: a bare name (no '/' but a trailing one) matches at any depth below the cwd.
    floating = anchor == "cwd" and not pattern.startswith(("./", "/")) and "/" not in pattern.rstrip("/")
    wild = 0 if floating else next((i for i, part in enumerate(parts) if _is_wild(part)), len(parts))
    try:
        literal = os.path.realpath(os.path.join(base, *parts[:wild]))
    except (OSError, ValueError):
        return False
    rest = parts[wild:]
    regex = re.escape(literal.rstrip(os.sep))
    for index, part in enumerate(rest):
        if part == "**":
            regex += "(?:/.+)" if index == len(rest) - 1 else "(?:/[^/]+)*"
        else:
            piece = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in part)
            regex += ("(?:/.+)?/" if floating and index == 0 else "/") + piece
    compiled = re.compile(regex or "/", re.DOTALL)
    path = target
    while True:
        if compiled.fullmatch(path):
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


# The web.


def _domain_matches(spec: str, value: Any, *, loose: bool) -> bool:
    url = _mapping(value).get("url")
    try:
        host = urlsplit(url).hostname if isinstance(url, str) else None
    except ValueError:
        host = None
    if not host:
        return loose
    domain = spec.removeprefix("domain:").lower()
    if domain.startswith("*."):
        return host.endswith(domain[1:])
    return host == domain


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# What a person is offered to allow for the rest of the run: never wider than the call, for Bash
# and the file tools.


def suggested_rule(tool: str, value: Any, cwd: str, home: str) -> str | None:
    """The narrowest rule that covers this call (``Bash(<the command>)``, ``Write(//<the path>)``,
    ``WebFetch(domain:<the host>)``, else the tool's name), or None when none can be written."""
    if tool == BASH:
        command = _mapping(value).get("command")
        text = f"Bash({command})" if isinstance(command, str) and "*" not in command else None
    elif tool in FILE_TOOLS:
        target = target_path(Call(tool, value, cwd, home))
        text = None if target is None or _is_wild(target) else f"{tool}(//{target.lstrip('/')})"
    elif tool == WEB_FETCH:
        url = _mapping(value).get("url")
        try:
            host = urlsplit(url).hostname if isinstance(url, str) else None
        except ValueError:
            host = None
        text = f"WebFetch(domain:{host})" if host else None
    else:
        text = tool
    if text is None:
        return None
    try:
        parse_rule(text)
    except ValueError:
        return None
    return text


# The request as stored: the input bounded, and the call's identity.

INPUT_MAX_BYTES = 16 * 1024
PREVIEW_STRING_MAX = 1000


def canonical(value: Any) -> str:
    """The input as canonical JSON: what identifies a call across its retries."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def bounded_input(value: Any) -> tuple[Any, bool]:
    """(the input, False) when its JSON is at most INPUT_MAX_BYTES, else (a text preview of it, True):
    long strings cut first, so that a path or a command stays readable beside a long file body."""
    if len(canonical(value).encode()) <= INPUT_MAX_BYTES:
        return value, False
    preview = json.dumps(_shortened(value), ensure_ascii=False)
    if len(preview.encode()) > INPUT_MAX_BYTES:
        preview = preview.encode()[: INPUT_MAX_BYTES - 3].decode(errors="ignore") + "…"
    return preview, True


def _shortened(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str) and len(value) > PREVIEW_STRING_MAX:
        return f"{value[:PREVIEW_STRING_MAX]}… [{len(value) - PREVIEW_STRING_MAX} more characters]"
    if depth > 8:
        return "…"
    if isinstance(value, Mapping):
        return {key: _shortened(item, depth + 1) for key, item in list(value.items())[:50]}
    if isinstance(value, list):
        return [_shortened(item, depth + 1) for item in value[:50]]
    return value
