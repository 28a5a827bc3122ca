"""Running the real OpenCode CLI (the native binary ``make node-tools`` installs): where it is, and an
environment that keeps it offline and out of the user's own config, data and plugins."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from .claude_code import node_tools

# OpenCode's switches for everything that would reach out at start: all of them on.
OFFLINE_ENV = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",  # the check for a newer release
    "OPENCODE_DISABLE_MODELS_FETCH": "1",  # the model list from models.dev (hourly, too)
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_PURE": "1",  # no external plugins at all
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1",  # no skill scans under ~/.claude and ~/.agents
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    # OpenCode installs @opencode-ai/plugin into each config directory with its built-in npm, whatever the
    # switches above say: offline, npm answers from its (empty) cache, so the install fails at once and
    # OpenCode only logs it.
    "npm_config_offline": "true",
}
# Inherited variables that would point OpenCode (or its npm) at other config, hosts or proxies.
DROPPED_ENV_PREFIXES = ("OPENCODE", "XDG_", "npm_config_", "NPM_CONFIG_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
DROPPED_ENV = {"http_proxy", "https_proxy", "all_proxy", "NODE_OPTIONS", "BUN_OPTIONS"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def opencode_binary() -> Path:
    """The real `opencode`; fails the test (not skips it) when the cache was never filled."""
    tools = node_tools()
    binary = tools / "clients" / "node_modules" / ".bin" / "opencode"
    if not (tools / ".installed").exists() or not binary.exists():
        pytest.fail(f"the OpenCode tests need the real binary in {tools}: run 'make node-tools'")
    return binary


def opencode_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment for `opencode`: a private home, XDG and temporary directories under ``root`` (its
    global config is ``root/config/opencode``), no machine-wide managed config (/etc/opencode), the offline
    switches, and nothing inherited that could point it elsewhere. `extra` adds or overrides variables."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(DROPPED_ENV_PREFIXES) and name not in DROPPED_ENV
    }
    dirs = {"HOME": "home", "XDG_CONFIG_HOME": "config", "XDG_DATA_HOME": "data", "XDG_CACHE_HOME": "cache"}
    dirs |= {"XDG_STATE_HOME": "state", "TMPDIR": "tmp", "OPENCODE_TEST_MANAGED_CONFIG_DIR": "managed"}
    for name, directory in dirs.items():
        (root / directory).mkdir(parents=True, exist_ok=True)
        env[name] = str(root / directory)
    env.update(OFFLINE_ENV)
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **extra})
    return env


def mcp_list(cwd: Path, env: Mapping[str, str], timeout: float = 90) -> str:
    """`opencode mcp list` in ``cwd``, its colours taken out. It exits 0 whatever the servers did, so the
    text is the answer: a server's line reads "✓ NAME connected" (or "✗ NAME failed" and the reason),
    followed by its command or URL."""
    done = subprocess.run(
        [str(opencode_binary()), "mcp", "list"],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return ANSI.sub("", done.stdout)
