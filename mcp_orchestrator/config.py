"""Settings, read once from flags and the environment.

Precedence: command-line flag, then environment variable, then the default. ``Settings.load``
reads ``os.environ`` unless given a mapping, so a caller can resolve settings for an environment
other than its own.

Plain pydantic rather than pydantic-settings: the flags, the variables and the TOML file of agent
profiles each need their own precedence and error text naming the variable, which a settings
source would have to be bent to give.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from .errors import ConfigError
from .paths import default_config_path, default_db_path, state_dir, token_path
from .profiles import AgentsConfig, load_agents_config

ENV_DB = "MCP_ORCHESTRATOR_DB"
ENV_MAX_PAYLOAD = "MCP_ORCHESTRATOR_MAX_PAYLOAD_BYTES"
ENV_MAX_RESULT = "MCP_ORCHESTRATOR_MAX_RESULT_BYTES"
ENV_SYNCHRONOUS = "MCP_ORCHESTRATOR_SQLITE_SYNCHRONOUS"
ENV_WEBHOOK_SECRET = "MCP_ORCHESTRATOR_WEBHOOK_SECRET"
ENV_CONFIG = "MCP_ORCHESTRATOR_CONFIG"
ENV_RUN_ID = "MCP_ORCHESTRATOR_RUN_ID"  # set for a sub-agent: the run it works on
ENV_NODE = "MCP_ORCHESTRATOR_NODE"


class Settings(BaseModel):
    db: str = Field(description=f"SQLite file path (or a URL); env {ENV_DB}; default in the state directory.")
    max_payload_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description=f"Largest JSON input, output or error stored, in bytes; env {ENV_MAX_PAYLOAD}.",
    )
    max_result_bytes: int = Field(
        24 * 1024,  # about 8k tokens: under Claude Code's warning at 10k, far under its cut at 25k
        ge=8 * 1024,
        le=1024 * 1024,
        description=f"Largest tool result handed to a model, in bytes of JSON (about 3 bytes a token); longer "
        f"ones come paged, with values shown as previews; env {ENV_MAX_RESULT}.",
    )
    sqlite_synchronous: Literal["full", "normal"] = Field(
        "full",
        description=f"SQLite durability: 'full' survives power loss, 'normal' only process crashes; "
        f"env {ENV_SYNCHRONOUS}.",
    )
    workspace: str = Field(description="Project directory recorded on new runs: CLAUDE_PROJECT_DIR, else the cwd.")
    token_file: Path = Field(description="The HTTP server's bearer token, created on first use (owner-only).")
    webhook_secret: str | None = Field(
        None, min_length=16, description=f"Shared secret for HMAC-signed POST /events; env {ENV_WEBHOOK_SECRET}."
    )
    config_file: Path | None = Field(None, description=f"TOML file of agent profiles and limits; env {ENV_CONFIG}.")
    agents: AgentsConfig = Field(default_factory=AgentsConfig, description="Agent profiles and limits.")
    runs_dir: Path = Field(description="Where sub-agents' logs and generated MCP configs go (state directory).")
    node: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=200,
        description=f"This node's name among those sharing a store (sub-agent processes belong to it); env {ENV_NODE}; "
        "default the host name.",
    )
    subagent_run_id: str | None = Field(
        None, description=f"Set (env {ENV_RUN_ID}) in a sub-agent's own processes: the run it works on."
    )

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, *, db: str | None = None, config: str | None = None
    ) -> Settings:
        env = os.environ if environ is None else environ
        config_file = config or env.get(ENV_CONFIG)
        if config_file and not Path(config_file).is_file():
            raise ConfigError(f"the config file {config_file} does not exist (from --config or {ENV_CONFIG})")
        config_path = Path(config_file) if config_file else default_config_path()
        values: dict[str, Any] = {
            "db": db or env.get(ENV_DB) or str(default_db_path()),
            "workspace": env.get("CLAUDE_PROJECT_DIR") or os.getcwd(),
            "token_file": str(token_path()),
            "config_file": config_path if config_path.is_file() else None,
            "agents": load_agents_config(config_path),
            "runs_dir": str(state_dir() / "runs"),
            "subagent_run_id": env.get(ENV_RUN_ID) or None,
        }
        for field, variable in _FROM_ENV.items():
            if env.get(variable):
                values[field] = env[variable]
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = []
            for error in exc.errors(include_url=False):
                field = str(error["loc"][0])
                source = _FROM_ENV.get(field, field)
                shown = "(hidden)" if field == "webhook_secret" else repr(values.get(field))
                problems.append(f"{source}={shown}: {error['msg']}")
            raise ConfigError(f"bad setting: {'; '.join(problems)}") from exc


_FROM_ENV = {
    "max_payload_bytes": ENV_MAX_PAYLOAD,
    "max_result_bytes": ENV_MAX_RESULT,
    "sqlite_synchronous": ENV_SYNCHRONOUS,
    "webhook_secret": ENV_WEBHOOK_SECRET,
    "node": ENV_NODE,
}
