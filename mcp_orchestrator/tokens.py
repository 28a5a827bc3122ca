"""The HTTP server's bearer token: one secret per user, in a file only its owner may read.

Apart from ``web`` (Starlette, the MCP SDK) so that ``mcp-orchestrator token`` prints it at once.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .errors import ConfigError


def load_or_create_token(path: Path) -> str:
    """The token in ``path``, created there (0600, in a 0700 directory) if there is none."""
    try:
        return _read_token(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it just now
        return _read_token(path)
    except OSError as exc:
        raise ConfigError(f"cannot create the token file {path}: {exc.strerror}") from exc
    token = secrets.token_urlsafe(32)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    return token


def _read_token(path: Path) -> str:
    token = path.read_text().strip()
    if len(token) < 16:
        raise ConfigError(f"the token file {path} holds no usable token; delete it to get a new one")
    return token
