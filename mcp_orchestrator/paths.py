"""Where mcp-orchestrator keeps its files unless told otherwise: the user's state and config directories.

Apart from ``config`` (pydantic, the agent profiles) so that what needs only a path, such as the
``token`` command, starts without them.
"""

from __future__ import annotations

from pathlib import Path

import platformdirs

APP_NAME = "mcp-orchestrator"


def state_dir() -> Path:
    """The user's state directory for mcp-orchestrator (XDG_STATE_HOME on Linux)."""
    return Path(platformdirs.user_state_dir(APP_NAME))


def default_config_path() -> Path:
    """The config file in the user's config directory (XDG_CONFIG_HOME on Linux)."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def default_db_path() -> Path:
    """The store in the user's state directory (XDG_STATE_HOME on Linux)."""
    return state_dir() / "orchestrator.db"


def token_path() -> Path:
    """The HTTP server's bearer token, in the state directory whatever the store."""
    return state_dir() / "token"
