"""Agent profiles: how to launch one kind of agent, and the config file that adds or changes them.

A profile is an argv template (never a shell line), an optional resume template, extra
environment and limits. Placeholders in braces are filled in at launch:

  {prompt}           the task wrapped in a short preamble (or, on a resume, the resume message)
  {task}             the task exactly as given to spawn_subagent
  {run_id}           the sub-agent's run id            {attempt}   the process attempt, from 1
  {session_id}       the harness session id read from the last attempt's output (resume only)
  {mcp_config}       a generated MCP config file (Claude Code's format) naming this orchestrator
  {opencode_config}  the same for OpenCode (an opencode.json)
  {cwd}              the working directory             {db}        the store's location
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, InvalidInput
from .models import Agent

PLACEHOLDERS = frozenset(
    {"prompt", "task", "run_id", "attempt", "session_id", "mcp_config", "opencode_config", "cwd", "db"}
)
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
NUL = "\x00"


# The spawn argument each caller-given placeholder value comes from (the rest the orchestrator makes).
SPAWN_FIELDS = {"prompt": "prompt", "task": "prompt", "cwd": "cwd"}


def render(template: str, values: dict[str, str]) -> str:
    """Fill the placeholders of one argv element (or environment value); other braces stay as they are.

    One pass over the template: a value that itself holds "{db}" or "{prompt}" is never expanded again.
    """
    return _PLACEHOLDER.sub(lambda found: values.get(found[1], found[0]), template)


def launch_argv(profile: AgentProfile, command: list[str], values: dict[str, str], use_session: bool) -> list[str]:
    """The argv of one attempt: the profile's template filled in, or a caller's ``command`` exactly as
    given (its braces are not placeholders: a caller's own argv is never rewritten), then extra_args."""
    template = (profile.resume if use_session else None) or profile.command
    head = [render(part, values) for part in template] if template else list(command)
    return [*head, *(render(part, values) for part in profile.extra_args)]


def launch_env(profile: AgentProfile, values: dict[str, str]) -> dict[str, str]:
    """The profile's extra environment of one attempt, filled in."""
    return {name: render(value, values) for name, value in profile.env.items()}


def check_launchable(name: str, profile: AgentProfile, command: list[str], values: dict[str, str]) -> None:
    """Refuse at spawn what exec would refuse at launch: an argv element or environment value that holds
    a NUL or cannot be encoded, so that the caller hears why now rather than the run failing later.

    ``values`` are the caller's placeholder values (prompt, task, cwd). The templates themselves are
    checked when the config is loaded, so such a value comes from the caller's command or from a value
    put into an argv or env template; stdin (the 'command' profile's prompt) may hold a NUL.
    """
    for index, part in enumerate(command):
        if (problem := unpassable(part)) is not None:
            raise InvalidInput(
                f"command[{index}] {part!r:.100} {problem}, which no program's argument can carry; remove it",
                field=f"command[{index}]",
            )
    templates = [*profile.command, *(profile.resume or []), *profile.extra_args, *profile.env.values()]
    for placeholder in dict.fromkeys(p for template in templates for p in _PLACEHOLDER.findall(template)):
        if (problem := unpassable(values.get(placeholder, ""))) is not None:
            field = SPAWN_FIELDS.get(placeholder, placeholder)
            raise InvalidInput(
                f"{field} {problem}; agent profile {name!r} puts {{{placeholder}}} in a command-line argument "
                "or environment value, which cannot carry it: remove it",
                field=field,
            )


def unpassable(text: str) -> str | None:
    """Why ``text`` cannot be a program's argument or environment value (None: it can)."""
    if NUL in text:
        return f"holds a NUL character (\\x00) at position {text.index(NUL)}"
    try:
        os.fsencode(text)
    except UnicodeEncodeError as exc:
        return f"holds {text[exc.start]!r} at position {exc.start}, which cannot be encoded ({exc.reason})"
    return None


class AgentProfile(BaseModel):
    """How to launch one kind of agent. Every template is an argv list: no shell ever sees a prompt."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(
        description="argv template; empty only for the built-in 'command' profile (argv given at spawn)."
    )
    resume: list[str] | None = Field(
        None, description="argv template to resume the harness's own session ({session_id}), if it has one."
    )
    extra_args: list[str] = Field(
        default_factory=list, description="Appended to command and resume: e.g. ['--model', 'opus']."
    )
    stdin: str | None = Field(None, description="Template written to the agent's stdin, e.g. '{prompt}'.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment (values may use placeholders).")
    output: Literal["text", "claude-json"] = Field(
        "text",
        description="How the final output is read from stdout: the text itself, or Claude Code's JSON "
        "(result text and session id).",
    )
    timeout_s: float | None = Field(3600.0, gt=0, description="Default per-attempt timeout, seconds.")
    max_attempts: int = Field(3, ge=1, le=100, description="Default attempts before the run fails.")
    max_concurrent: int | None = Field(None, ge=1, le=1000, description="At most this many of this profile at once.")
    description: str = ""
    enabled: bool = Field(True, description="False refuses spawns of this profile (e.g. the built-in 'command').")

    @field_validator("command", "resume", "extra_args")
    @classmethod
    def _known_placeholders(cls, argv: list[str] | None) -> list[str] | None:
        for part in argv or []:
            _check_placeholders(part)
        return argv

    @field_validator("stdin")
    @classmethod
    def _known_in_stdin(cls, template: str | None) -> str | None:
        if template is not None:
            _check_placeholders(template)
        return template

    @field_validator("env")
    @classmethod
    def _known_in_env(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if not name or "=" in name or unpassable(name) is not None:
                raise ValueError(f"environment variable name {name!r}: give a non-empty name without '=' or NUL")
            _check_placeholders(value)
        return env


def _check_placeholders(template: str) -> None:
    if (problem := unpassable(template)) is not None:
        raise ValueError(f"{template!r:.100} {problem}, which no argv, environment or stdin can carry")
    unknown = set(_PLACEHOLDER.findall(template)) - PLACEHOLDERS
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {', '.join('{' + name + '}' for name in sorted(unknown))} in {template!r}; "
            f"known: {', '.join('{' + name + '}' for name in sorted(PLACEHOLDERS))}"
        )


_CLAUDE_FLAGS = ["--output-format", "json", "--mcp-config", "{mcp_config}", "--allowedTools", "mcp__orchestrator"]

BUILTIN_PROFILES: dict[str, AgentProfile] = {
    # Headless Claude Code. Only the orchestrator's own tools are pre-approved (the sub-agent must be
    # able to checkpoint and finish); any other tool follows Claude Code's own permission settings.
    # Allow more with extra_args, e.g. ["--allowedTools", "Edit Bash(git:*)"].
    "claude": AgentProfile(
        command=["claude", "-p", "{prompt}", *_CLAUDE_FLAGS],
        resume=["claude", "-p", "{prompt}", "--resume", "{session_id}", *_CLAUDE_FLAGS],
        output="claude-json",
        description="Claude Code in headless mode (claude -p), resumed with --resume.",
    ),
    "opencode": AgentProfile(
        command=["opencode", "run", "{prompt}"],
        env={"OPENCODE_CONFIG": "{opencode_config}"},
        description="OpenCode (opencode run), the orchestrator added through OPENCODE_CONFIG.",
    ),
    "command": AgentProfile(
        command=[],
        stdin="{task}",  # a program is not a model: no preamble, and no resume message
        description="Any executable: spawn_subagent's command is the argv, exactly as given (no placeholders), "
        "and the prompt, exactly as given, arrives on stdin.",
    ),
}


class AgentsConfig(BaseModel):
    """What the config file sets: agent profiles, limits, supervisor timings and retention."""

    model_config = ConfigDict(extra="forbid")

    default_agent: str = "claude"
    max_concurrent: int = Field(4, ge=1, le=1000, description="Sub-agent processes at once, all profiles together.")
    node_max_concurrent: int | None = Field(
        None, ge=1, le=1000, description="Sub-agent processes at once on one node (machine); unset: no more than all."
    )
    concurrency_keys: dict[str, int] = Field(
        default_factory=dict, description="Limits of named concurrency keys (a key not named here: 1)."
    )
    lease_ttl_s: float = Field(15.0, ge=1, le=600, description="A supervisor that stops renewing loses its lease.")
    heartbeat_s: float = Field(1.0, gt=0, le=60, description="How often a runner reports its agent alive.")
    heartbeat_timeout_s: float = Field(15.0, ge=1, le=3600, description="Silence after which a runner is dead.")
    kill_grace_s: float = Field(5.0, ge=0, le=600, description="Between SIGTERM and SIGKILL of an agent's group.")
    retry_backoff_s: float = Field(1.0, ge=0, le=3600, description="Wait before the first retry; doubles each time.")
    retention_days: float = Field(
        30.0, ge=0, le=36_500, description="Ended runs and old events are removed after this many days; 0 keeps all."
    )
    profiles: dict[str, AgentProfile] = Field(default_factory=lambda: dict(BUILTIN_PROFILES))

    @field_validator("concurrency_keys")
    @classmethod
    def _positive(cls, limits: dict[str, int]) -> dict[str, int]:
        for key, limit in limits.items():
            if not isinstance(limit, int) or limit < 1:
                raise ValueError(f"concurrency_keys.{key} = {limit!r}: a limit is a whole number of 1 or more")
        return limits

    @model_validator(mode="after")
    def _default_exists(self) -> AgentsConfig:
        if self.default_agent not in self.profiles:
            raise ValueError(f"default_agent {self.default_agent!r} is not a profile ({', '.join(self.profiles)})")
        return self

    def profile(self, name: str) -> AgentProfile:
        known = sorted(n for n, p in self.profiles.items() if p.enabled)
        profile = self.profiles.get(name)
        if profile is None:
            raise InvalidInput(
                f"unknown agent profile {name!r}; known: {', '.join(known)} "
                "(add profiles in the config file's [profiles.NAME] tables)",
                agent=name,
            )
        if not profile.enabled:
            raise InvalidInput(
                f"agent profile {name!r} is disabled in the config file; use one of {', '.join(known)}", agent=name
            )
        return profile

    def key_limit(self, key: str) -> int:
        return self.concurrency_keys.get(key, 1)


def load_agents_config(path: Path | None) -> AgentsConfig:
    """The built-in profiles, changed by the TOML file at ``path`` (if given and present).

    A ``[profiles.NAME]`` table for a built-in name changes only the fields it sets, so
    ``[profiles.claude]`` with ``extra_args = ["--model", "opus"]`` switches the model in one line.
    """
    if path is None or not path.exists():
        return AgentsConfig()
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
    values: dict[str, Any] = dict(document)
    limits = values.pop("limits", {})
    supervisor = values.pop("supervisor", {})
    retention = dict(values.pop("retention", {}))
    if "days" in retention:
        retention["retention_days"] = retention.pop("days")
    profiles: dict[str, Any] = {name: profile.model_dump() for name, profile in BUILTIN_PROFILES.items()}
    for name, table in (values.pop("profiles", None) or {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [profiles.{name}] must be a table")
        profiles[name] = {**profiles[name], **table} if name in profiles else table
    try:
        return AgentsConfig.model_validate({**values, **limits, **supervisor, **retention, "profiles": profiles})
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors(include_url=False)]
        raise ConfigError(f"bad config file {path}: {'; '.join(problems)}") from exc


@dataclass(frozen=True)
class Launch:
    """A claimed sub-agent, ready for the supervisor to start."""

    agent: Agent
    profile: AgentProfile
    prompt: str
    use_session: bool  # launch with the profile's resume template and the harness's session id
