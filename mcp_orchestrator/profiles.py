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
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, InvalidInput
from .models import Agent
from .permissions import ApprovalsConfig, PermissionPolicy

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


def executable(profile: AgentProfile, command: list[str]) -> str | None:
    """The program a profile (or, for the 'command' profile, a caller's ``command``) starts; None when
    a placeholder makes it unknowable before launch."""
    argv = profile.command or command
    return argv[0] if argv and argv[0] and not _PLACEHOLDER.search(argv[0]) else None


def harness_missing(name: str, program: str, cwd: str, path: str | None) -> str | None:
    """Why ``program`` cannot be started, in words for the caller and the run's error; None when it can.

    ``path`` is the PATH searched. Checked at spawn and again at launch with the same words: the
    PATH of the process that supervises sub-agents (not a client's) is the one that counts.
    """
    if os.sep in program:
        target = Path(cwd, program).expanduser()
        if target.is_file() and os.access(target, os.X_OK):
            return None
        return f"agent profile {name!r} runs {program!r}, which is not an executable file (looked in {cwd!r})"
    if shutil.which(program, path=path) is not None:
        return None
    return (
        f"agent profile {name!r} runs {program!r}, which is not on PATH (searched: {path or '(empty)'}); the PATH "
        "of the server that supervises sub-agents is what counts: install it there, or give the profile's command "
        "its absolute path"
    )


def uses_prompt(profile: AgentProfile) -> bool:
    """Whether the profile hands the agent the orchestrator's prompt (where resume notes and messages go)."""
    templates = [*profile.command, *(profile.resume or []), *profile.extra_args, *profile.env.values()]
    return any("{prompt}" in template for template in [*templates, profile.stdin or ""])


def profile_path(profile: AgentProfile) -> str | None:
    """The PATH a profile's agent is started with: its own ``env.PATH`` when it has a fixed one."""
    own = profile.env.get("PATH")
    return own if own is not None and not _PLACEHOLDER.search(own) else os.environ.get("PATH", os.defpath)


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
    input: Literal["text", "claude-stream-json"] = Field(
        "text",
        description="How stdin is written: 'text' (the stdin template, then closed) or 'claude-stream-json' (Claude "
        "Code's --input-format stream-json: the prompt as a user message, then each message sent to the running "
        "agent, stdin kept open until it has answered and nothing more is queued).",
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment (values may use placeholders).")
    output: Literal["text", "claude-json", "codex-json", "gemini-json", "opencode-json"] = Field(
        "text",
        description="How the final output is read from stdout: the text itself, or a harness's JSON lines "
        "(Claude Code's stream-json, codex exec --json, Gemini CLI's stream-json, opencode run --format json): "
        "the session id, the result, the harness's own error and usage limits.",
    )
    timeout_s: float | None = Field(3600.0, gt=0, description="Default per-attempt timeout, seconds.")
    max_attempts: int = Field(3, ge=1, le=100, description="Default attempts before the run fails.")
    max_concurrent: int | None = Field(None, ge=1, le=1000, description="At most this many of this profile at once.")
    account: str | None = Field(
        None,
        max_length=200,
        description="Whose usage limits it shares: at a usage limit every queued sub-agent of the same account "
        "waits. Default: its executable and its config directory (CLAUDE_CONFIG_DIR, CODEX_HOME), so two "
        "profiles that run one 'claude' login share one limit.",
    )
    description: str = ""
    enabled: bool = Field(True, description="False refuses spawns of this profile (e.g. the built-in 'command').")
    permissions: PermissionPolicy = Field(
        default_factory=PermissionPolicy,
        description="What its sub-agents may do without asking a person (Claude Code's permission prompt tool).",
    )
    max_budget_usd: float | None = Field(
        None, gt=0, le=1_000_000, description="Default budget in US dollars of its sub-agents (and their descendants)."
    )
    max_turns: int | None = Field(None, ge=1, le=1_000_000, description="Default model turns of its sub-agents.")
    budget_flag: str | None = Field(
        None, description="The harness's option that caps its spending, given the dollars left: '--max-budget-usd'."
    )
    turns_flag: str | None = Field(
        None, description="The harness's option that caps its turns, given the turns left: '--max-turns'."
    )

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


def account_of(name: str, profile: AgentProfile) -> str:
    """The account whose usage limits a profile's sub-agents share (see ``AgentProfile.account``)."""
    if profile.account:
        return profile.account
    if not profile.command:
        return f"profile:{name}"
    config_dir = next((profile.env[k] for k in ("CLAUDE_CONFIG_DIR", "CODEX_HOME") if k in profile.env), "")
    return f"{Path(profile.command[0]).name}:{config_dir}"


def _check_placeholders(template: str) -> None:
    if (problem := unpassable(template)) is not None:
        raise ValueError(f"{template!r:.100} {problem}, which no argv, environment or stdin can carry")
    unknown = set(_PLACEHOLDER.findall(template)) - PLACEHOLDERS
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {', '.join('{' + name + '}' for name in sorted(unknown))} in {template!r}; "
            f"known: {', '.join('{' + name + '}' for name in sorted(PLACEHOLDERS))}"
        )


PERMISSION_TOOL = "permission_prompt"  # the orchestrator's tool Claude Code asks before a tool that would prompt
_CLAUDE_FLAGS = [
    "--output-format",
    "stream-json",  # a line per message: the session id at once, then tool calls, limits and the result
    "--verbose",
    "--input-format",
    "stream-json",  # user messages on stdin: the prompt, then messages sent to it while it works
    "--mcp-config",
    "{mcp_config}",
    "--allowedTools",
    "mcp__orchestrator",
    "--permission-prompt-tool",
    f"mcp__orchestrator__{PERMISSION_TOOL}",
]

_ORCHESTRATOR_ENV = '["MCP_ORCHESTRATOR_DB", "MCP_ORCHESTRATOR_RUN_ID", "MCP_ORCHESTRATOR_CONFIG"]'
_CODEX_FLAGS = [
    "--json",  # JSONL events: thread.started (the session id) at once, items, turn.completed or turn.failed
    "--skip-git-repo-check",  # a sub-agent may work in a directory that is not a git repository
    "--sandbox",  # (an exec option: before `resume` it holds for a resumed session too)
    "workspace-write",  # commands may write in the working directory (its worktree) and temp, nowhere else
    "-c",
    'approval_policy="never"',  # nobody is there to approve: a refused command's failure goes back to the model
    # The orchestrator's MCP server. Codex has no flag for a config file, so its `-c` overrides; it starts
    # `mcp-orchestrator serve` from PATH (as the README's client setup does) and passes it the store and run
    # id from the environment the orchestrator gives the agent (Codex gives an MCP server only a few variables
    # of its own, such as PATH and HOME, and those it names).
    "-c",
    'mcp_servers.orchestrator.command="mcp-orchestrator"',
    "-c",
    'mcp_servers.orchestrator.args=["serve"]',
    "-c",
    f"mcp_servers.orchestrator.env_vars={_ORCHESTRATOR_ENV}",
    "-c",
    "mcp_servers.orchestrator.required=true",  # no orchestrator, no run: exec fails saying why, at once
    "-c",
    "mcp_servers.orchestrator.startup_timeout_sec=60",  # the default 10 s is short for a busy machine
    "-c",
    'mcp_servers.orchestrator.default_tools_approval_mode="approve"',  # checkpoint and finish_run never ask
]
_GEMINI_FLAGS = [
    "--output-format=stream-json",  # init (the session id) first, message pieces, tool calls, a result line
    "--approval-mode=auto_edit",  # file edits are approved; in headless mode whatever would ask is refused
    "--skip-trust",  # trust the working directory for this session: else headless mode refuses to start there
    # and starts no stdio MCP server. The orchestrator's tools are allowed without asking (headless mode
    # refuses what would ask); other MCP servers of the user's settings are not loaded. Gemini CLI takes the
    # server from the user's settings (`gemini mcp add --scope user orchestrator mcp-orchestrator serve`):
    # it has no flag for a config file, and reads a system settings file only when root owns it.
    "--allowed-mcp-server-names=orchestrator",
]

BUILTIN_PROFILES: dict[str, AgentProfile] = {
    # Headless Claude Code. The orchestrator's own tools are pre-approved (the sub-agent must be able to
    # checkpoint and finish); every other tool that would prompt is asked of the orchestrator's
    # permission tool, which follows the profile's permission policy and asks a person when it says so.
    # The prompt, and every message sent to the running agent, arrive on stdin as stream-json user messages.
    "claude": AgentProfile(
        command=["claude", "-p", *_CLAUDE_FLAGS],
        resume=["claude", "-p", "--resume", "{session_id}", *_CLAUDE_FLAGS],
        stdin="{prompt}",
        input="claude-stream-json",
        output="claude-json",
        budget_flag="--max-budget-usd",
        turns_flag="--max-turns",
        description="Claude Code in headless mode (claude -p, stream-json in and out), resumed with --resume.",
    ),
    # Codex CLI in exec mode: edits and commands inside the working directory (its sandbox), no approvals.
    "codex": AgentProfile(
        command=["codex", "exec", *_CODEX_FLAGS, "{prompt}"],
        resume=["codex", "exec", *_CODEX_FLAGS, "resume", "{session_id}", "{prompt}"],
        output="codex-json",
        description="Codex CLI (codex exec --json, workspace-write sandbox), resumed with codex exec resume.",
    ),
    # Gemini CLI in headless mode: edits files without asking; shell commands are refused.
    "gemini": AgentProfile(
        command=["gemini", "--prompt={prompt}", *_GEMINI_FLAGS],
        resume=["gemini", "--resume={session_id}", "--prompt={prompt}", *_GEMINI_FLAGS],
        output="gemini-json",
        description="Gemini CLI (gemini --prompt, stream-json, auto_edit), resumed with --resume; the orchestrator "
        "comes from the user's Gemini settings.",
    ),
    # OpenCode's default agent may edit and run commands; `run` rejects whatever would ask (a file outside the
    # working directory, say), as no --auto is given.
    "opencode": AgentProfile(
        command=["opencode", "run", "--format", "json", "{prompt}"],
        resume=["opencode", "run", "--session", "{session_id}", "--format", "json", "{prompt}"],
        env={"OPENCODE_CONFIG": "{opencode_config}"},
        output="opencode-json",
        description="OpenCode (opencode run --format json), the orchestrator added through OPENCODE_CONFIG, "
        "resumed with --session.",
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
    usage_limit_backoff_s: float = Field(
        60.0, ge=0.1, le=86_400, description="At a usage limit whose reset time is not given: the first pause; doubles."
    )
    usage_limit_max_backoff_s: float = Field(
        1800.0, ge=1, le=86_400, description="The longest such pause before the next try."
    )
    max_budget_usd: float | None = Field(
        None, gt=0, le=1_000_000, description="Default budget in US dollars of a sub-agent whose profile sets none."
    )
    max_turns: int | None = Field(None, ge=1, le=1_000_000, description="Default model turns of a sub-agent.")
    activity_max: int = Field(
        1000, ge=10, le=1_000_000, description="Activity entries kept per run; older ones are dropped and counted."
    )
    silent_after_s: float | None = Field(
        600.0, gt=0, le=604_800, description="A live sub-agent whose output shows no activity this long is silent."
    )
    on_silent: Literal["flag", "restart", "cancel"] = Field(
        "flag",
        description="What happens to a silent sub-agent: flagged only; its process restarted (a failed attempt); "
        "or its run cancelled.",
    )
    retention_days: float = Field(
        30.0, ge=0, le=36_500, description="Ended runs and old events are removed after this many days; 0 keeps all."
    )
    profiles: dict[str, AgentProfile] = Field(default_factory=lambda: dict(BUILTIN_PROFILES))
    approvals: ApprovalsConfig = Field(default_factory=ApprovalsConfig, description="How permission requests wait.")

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
    import tomllib  # only with a config file: most processes start without one

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
        problems = [
            f"{'.'.join(map(str, error['loc']))}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors(include_url=False)
        ]
        raise ConfigError(f"bad config file {path}: {'; '.join(problems)}") from exc


@dataclass(frozen=True)
class Launch:
    """A claimed sub-agent, ready for the supervisor to start."""

    agent: Agent
    profile: AgentProfile
    prompt: str
    use_session: bool  # launch with the profile's resume template and the harness's session id
    budget_usd: float | None = None  # what the harness may spend in this attempt (its running total included)
    max_turns: int | None = None  # model turns it may take in this attempt
