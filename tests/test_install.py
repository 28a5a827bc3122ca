"""`mcp-orchestrator install claude-code|opencode`: one command connects a client to this installation, checked
with the real clients (`claude mcp list` and `opencode mcp list` say connected, over stdio and over HTTP with
the token)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from .claude_code import claude_env
from .model_standin import Standin
from .opencode import mcp_list, opencode_env
from .support import http_token, server_env

pytestmark = pytest.mark.processes

SCRIPT = Path(sys.executable).with_name("mcp-orchestrator")  # the console script of this environment


@pytest.fixture
def standin() -> Iterator[Standin]:
    with Standin() as model:
        yield model


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)


def install(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run([str(SCRIPT), "install", *args], cwd, env)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def test_claude_code_connects_over_stdio_by_the_installations_path(
    project: Path, tmp_path: Path, standin: Standin, private_state_dir: Path
) -> None:
    env = claude_env(standin, tmp_path / "claude-config", HOME=str(tmp_path / "home"))
    # Nothing of this installation is on the client's PATH: the absolute path is what connects.
    assert all(not (Path(entry) / "mcp-orchestrator").exists() for entry in env["PATH"].split(os.pathsep) if entry)
    db = tmp_path / "store.db"
    done = install(project, env, "claude-code", "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert "registered 'orchestrator' with Claude Code (local scope)" in done.stdout
    listed = run(["claude", "mcp", "list"], project, env)
    line = next(line for line in listed.stdout.splitlines() if line.startswith("orchestrator:"))
    assert f"{Path(sys.executable).absolute()} -m mcp_orchestrator serve" in line and "Connected" in line, line
    assert db.exists()  # the server Claude Code started opened the store it was told


def test_claude_code_connects_over_http_with_the_token_in_its_header(
    project: Path,
    tmp_path: Path,
    standin: Standin,
    http_server: Callable[..., str],
    private_state_dir: Path,
) -> None:
    base = http_server()
    env = {**claude_env(standin, tmp_path / "claude-config", HOME=str(tmp_path / "home")), **_state(tmp_path)}
    done = install(project, env, "claude-code", "--http", f"{base}/mcp")
    assert done.returncode == 0, done.stderr
    assert http_token(private_state_dir) not in done.stdout  # the token is not printed
    listed = run(["claude", "mcp", "list"], project, env)
    assert any(line.startswith("orchestrator:") and "Connected" in line for line in listed.stdout.splitlines()), (
        listed.stdout
    )


def test_without_claude_a_project_gets_its_mcp_json_and_other_entries_stay(
    project: Path, tmp_path: Path, private_state_dir: Path
) -> None:
    env = {**server_env(), "PATH": os.defpath, **_state(tmp_path)}
    (project / ".mcp.json").write_text(json.dumps({"mcpServers": {"other": {"command": "other-server"}}}))
    refused = install(project, env, "claude-code")
    assert refused.returncode == 1 and "'claude' is not on PATH" in refused.stderr
    assert "--scope project" in refused.stderr
    done = install(project, env, "claude-code", "--scope", "project")
    assert done.returncode == 0, done.stderr
    servers = json.loads((project / ".mcp.json").read_text())["mcpServers"]
    assert servers["other"] == {"command": "other-server"}
    assert servers["orchestrator"] == {
        "type": "stdio",
        "command": str(Path(sys.executable).absolute()),
        "args": ["-m", "mcp_orchestrator", "serve"],
    }
    remote = install(project, env, "claude-code", "--scope", "project", "--http", "http://127.0.0.1:8765/mcp")
    assert remote.returncode == 0, remote.stderr
    entry = json.loads((project / ".mcp.json").read_text())["mcpServers"]["orchestrator"]
    assert entry == {
        "type": "http",
        "url": "http://127.0.0.1:8765/mcp",
        "headers": {"Authorization": f"Bearer {http_token(private_state_dir)}"},
    }
    assert stat.S_IMODE((project / ".mcp.json").stat().st_mode) == 0o600  # it holds the token now
    (project / ".mcp.json").write_text("[1, 2")
    broken = install(project, env, "claude-code", "--scope", "project")
    assert broken.returncode == 1 and ".mcp.json" in broken.stderr and "fix or move it" in broken.stderr


def test_opencode_gets_a_local_or_a_remote_entry(project: Path, tmp_path: Path, private_state_dir: Path) -> None:
    env = {**server_env(), **_state(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    (project / "opencode.json").write_text(json.dumps({"$schema": "https://opencode.ai/config.json", "model": "x"}))
    assert install(project, env, "opencode").returncode == 0
    config = json.loads((project / "opencode.json").read_text())
    assert config["model"] == "x"
    assert config["mcp"]["orchestrator"] == {
        "type": "local",
        "command": [str(Path(sys.executable).absolute()), "-m", "mcp_orchestrator", "serve"],
        "enabled": True,
    }
    done = install(project, env, "opencode", "--scope", "user", "--http", "http://127.0.0.1:8765/mcp")
    assert done.returncode == 0, done.stderr
    path = tmp_path / "config" / "opencode" / "opencode.json"
    remote = json.loads(path.read_text())["mcp"]["orchestrator"]
    assert remote["type"] == "remote" and remote["headers"]["Authorization"].startswith("Bearer ")
    assert remote["oauth"] is False  # a static token: no OAuth discovery when it is refused
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the token
    bad = install(project, env, "opencode", "--http", "127.0.0.1:8765")
    assert bad.returncode == 1 and "http://127.0.0.1:8765/mcp" in bad.stderr


def test_opencode_connects_over_stdio_by_the_installations_path(
    project: Path, tmp_path: Path, private_state_dir: Path
) -> None:
    env = opencode_env(tmp_path / "opencode", **_state(tmp_path))
    # Nothing of this installation is on the client's PATH: the absolute path is what connects.
    assert all(not (Path(entry) / "mcp-orchestrator").exists() for entry in env["PATH"].split(os.pathsep) if entry)
    db = tmp_path / "store.db"
    done = install(project, env, "opencode", "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert f"wrote 'orchestrator' into {project / 'opencode.json'}" in done.stdout
    listed = mcp_list(project, env)
    command = f"{Path(sys.executable).absolute()} -m mcp_orchestrator serve"
    assert re.search(rf"✓ orchestrator connected\n│ +{re.escape(command)}\n", listed), listed
    assert db.exists()  # the server OpenCode started opened the store it was told


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # the store plays no part in connecting
def test_opencode_connects_over_http_from_the_users_global_config(
    project: Path, tmp_path: Path, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    base = http_server()
    env = opencode_env(tmp_path / "opencode", **_state(tmp_path))
    done = install(project, env, "opencode", "--scope", "user", "--http", f"{base}/mcp")
    assert done.returncode == 0, done.stderr
    assert http_token(private_state_dir) not in done.stdout  # the token is not printed
    assert (tmp_path / "opencode" / "config" / "opencode" / "opencode.json").exists()  # where OpenCode reads it
    assert not (project / "opencode.json").exists()
    listed = mcp_list(project, env)
    assert re.search(rf"✓ orchestrator connected\n│ +{re.escape(base)}/mcp\n", listed), listed


def test_an_empty_bearer_token_is_called_missing(http_server: Callable[..., str], private_state_dir: Path) -> None:
    base = http_server()
    for header in ("Bearer", ""):  # "Bearer " arrives as "Bearer": trailing blanks are not part of a value
        response = httpx2.post(f"{base}/mcp", headers={"Authorization": header}, json={})
        assert response.status_code == 401 and "bearer token missing" in response.json()["message"], header
    wrong = httpx2.post(f"{base}/mcp", headers={"Authorization": "Bearer nope"}, json={})
    assert wrong.status_code == 401 and "bearer token wrong" in wrong.json()["message"]


def _state(tmp_path: Path) -> dict[str, str]:
    """The state directory of private_state_dir (the token), for a subprocess."""
    return {"XDG_STATE_HOME": str(tmp_path / "state")}
