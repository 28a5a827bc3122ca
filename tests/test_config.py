"""Settings: flag over environment over default, and bad values named with what is expected."""

from __future__ import annotations

import pytest

from mcp_orchestrator.config import Settings
from mcp_orchestrator.errors import ConfigError
from mcp_orchestrator.paths import default_db_path


def test_flag_beats_environment_beats_default() -> None:
    env = {"MCP_ORCHESTRATOR_DB": "/from/env.db"}
    assert Settings.load(env, db="/from/flag.db").db == "/from/flag.db"
    assert Settings.load(env).db == "/from/env.db"
    assert Settings.load({}).db == str(default_db_path())
    assert default_db_path().name == "orchestrator.db" and "mcp-orchestrator" in str(default_db_path())


def test_state_directory_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "mcp-orchestrator" / "orchestrator.db"


def test_workspace_is_the_client_project_directory() -> None:
    assert Settings.load({"CLAUDE_PROJECT_DIR": "/srv/project"}).workspace == "/srv/project"


def test_limits_and_durability_are_configurable() -> None:
    settings = Settings.load(
        {"MCP_ORCHESTRATOR_MAX_PAYLOAD_BYTES": "4096", "MCP_ORCHESTRATOR_SQLITE_SYNCHRONOUS": "NORMAL"}
    )
    assert (settings.max_payload_bytes, settings.sqlite_synchronous) == (4096, "normal")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MCP_ORCHESTRATOR_MAX_PAYLOAD_BYTES": "lots"}, "MCP_ORCHESTRATOR_MAX_PAYLOAD_BYTES='lots'"),
        ({"MCP_ORCHESTRATOR_MAX_PAYLOAD_BYTES": "10"}, "greater than or equal to 1024"),
        ({"MCP_ORCHESTRATOR_SQLITE_SYNCHRONOUS": "off"}, "MCP_ORCHESTRATOR_SQLITE_SYNCHRONOUS='off'"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        Settings.load(env)
