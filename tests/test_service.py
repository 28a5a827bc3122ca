"""`mcp-orchestrator service install|uninstall|status`: the supervisor as a per-user service.

The unit's quoting is checked three ways: by systemd itself (`systemd-analyze verify`), by reading it
back as a shell would, and by running what it says with no other process on the store until a
schedule fires. No user service manager runs here: `systemctl --user` fails for want of a bus (the
command's message is asserted), and a stand-in `systemctl` shows the calls made when one answers.
"""

from __future__ import annotations

import json
import os
import plistlib
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_orchestrator.cli import main
from mcp_orchestrator.cli.unitfiles import ServiceSpec, read_systemd_unit, systemd_unit
from mcp_orchestrator.runtime import Engine

from .subagent_helpers import engine_on
from .support import cli, eventually, lease_holder

# Every kind of character a store path may carry that a unit file treats specially.
AWKWARD = "store dir %Q 100%% \"quoted\" 'single' $HOME \\ é"
NO_BUS = "the service file is written but the service is not running"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of the test's own, where no user service manager can be reached (an empty runtime directory)."""
    home = tmp_path / "home"
    home.mkdir()
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    return home


def unit_path(home: Path) -> Path:
    return home / ".config" / "systemd" / "user" / "mcp-orchestrator.service"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    printed = capsys.readouterr()
    return code, printed.out, printed.err


def read_as_a_shell_would(unit: str) -> tuple[list[str], dict[str, str]]:
    """ExecStart and Environment by shlex (double quotes, backslash escapes), ``%%`` and ``$$`` undone: a
    reading independent of the module's own."""
    command: list[str] = []
    environment = {}
    for line in unit.splitlines():
        if line.startswith("ExecStart="):
            program, *arguments = shlex.split(line.removeprefix("ExecStart="))
            command = [program.replace("%%", "%"), *(a.replace("%%", "%").replace("$$", "$") for a in arguments)]
        elif line.startswith("Environment="):
            for word in shlex.split(line.removeprefix("Environment=")):
                name, _, value = word.replace("%%", "%").partition("=")
                environment[name] = value
    return command, environment


def fake_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A ``systemctl`` first on PATH that answers like a user manager would and logs its arguments; the log,
    and the file its ``show MainPID`` reads."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log, pid = tmp_path / "systemctl.log", tmp_path / "main.pid"
    script = bin_dir / "systemctl"
    script.write_text(
        f'#!/bin/sh\necho "$*" >> "{log}"\n'
        f'case "$2" in\n  is-enabled) echo enabled;;\n  is-active) echo active;;\n'
        f'  show) cat "{pid}" 2>/dev/null || echo 0;;\nesac\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log, pid


# The files.


def test_the_unit_runs_this_installation_with_the_store_quoted_exactly(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / AWKWARD / "orchestrator.db"
    monkeypatch.setenv("PATH", "/usr/bin:bin:/usr/bin:/opt/x y")  # the service's is absolute, without repeats
    code, unit, _ = run(capsys, "service", "install", "--print", "--db", str(db), "--env", "EXTRA=a b")
    assert code == 0 and not unit_path(home).exists()  # --print writes nothing
    escaped = str(db).replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    assert f'Environment="MCP_ORCHESTRATOR_DB={escaped}"\n' in unit
    assert f"ExecStart={os.path.abspath(sys.executable)} -m mcp_orchestrator supervise\n" in unit
    for line in ("Restart=on-failure", "RestartSec=5", "KillMode=process", "WantedBy=default.target"):
        assert f"\n{line}\n" in unit
    expected_env = {"MCP_ORCHESTRATOR_DB": str(db), "PATH": "/usr/bin:/opt/x y", "EXTRA": "a b"}
    expected = ([os.path.abspath(sys.executable), "-m", "mcp_orchestrator", "supervise"], expected_env)
    assert read_as_a_shell_would(unit) == expected
    assert read_systemd_unit(unit) == expected


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit_with_awkward_paths(tmp_path: Path) -> None:
    # systemd checks that the program exists: a wrong unquoting would name another path.
    program = tmp_path / "bin dir %Q $x é" / "py thon"
    program.parent.mkdir()
    program.symlink_to(sys.executable)
    db = str(tmp_path / AWKWARD / "orchestrator.db")
    spec = ServiceSpec(
        [str(program), "-m", "mcp_orchestrator", "supervise", "$HOME %Q"], {"DB": db}, tmp_path, tmp_path
    )
    unit = tmp_path / "mcp-orchestrator.service"
    unit.write_text(systemd_unit(spec))
    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    said = verified.stdout + verified.stderr
    assert verified.returncode == 0 and "mcp-orchestrator.service" not in said, said  # no line was ignored


@given(
    st.lists(st.text(st.characters(blacklist_categories=["Cc", "Cs"])), min_size=1, max_size=4),
    st.dictionaries(
        st.from_regex("[A-Z_][A-Z0-9_]{0,8}", fullmatch=True), st.text(st.characters(blacklist_categories=["Cc", "Cs"]))
    ),
)
def test_every_value_reads_back_as_written(words: list[str], environment: dict[str, str]) -> None:
    command = ["/opt/" + words[0].translate({ord(c): None for c in "\"'\\"}), *words[1:]]
    unit = systemd_unit(ServiceSpec(command, environment, Path("/"), Path("/")))
    assert read_systemd_unit(unit) == (command, environment)
    assert read_as_a_shell_would(unit) == (command, environment)


def test_the_launchd_plist_parses_back(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / AWKWARD / "orchestrator.db"
    code, printed, _ = run(capsys, "service", "install", "--print", "--kind", "launchd", "--db", str(db))
    plist = plistlib.loads(printed.encode())
    assert code == 0 and plist["Label"] == "mcp-orchestrator"
    assert plist["ProgramArguments"] == [os.path.abspath(sys.executable), "-m", "mcp_orchestrator", "supervise"]
    assert plist["EnvironmentVariables"]["MCP_ORCHESTRATOR_DB"] == str(db)
    assert set(plist["EnvironmentVariables"]) == {"MCP_ORCHESTRATOR_DB", "PATH"}
    assert plist["KeepAlive"] == {"SuccessfulExit": False} and plist["RunAtLoad"] is True
    assert plist["AbandonProcessGroup"] is True  # sub-agents outlive a restart of the supervisor
    state = Path(os.environ["XDG_STATE_HOME"]) / "mcp-orchestrator"
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == str(state / "logs" / "service.log")
    assert plist["WorkingDirectory"] == str(home)


# Installing without a service manager, and with one that answers.


def test_without_a_user_bus_install_writes_the_unit_and_says_what_to_run(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "store.db"
    code, out, err = run(capsys, "service", "install", "--db", str(db))
    assert code == 1 and unit_path(home).exists() and db.exists()  # the store was opened (checked) first
    assert f"wrote {unit_path(home)}" in out
    assert err.startswith(f"config_error: {NO_BUS}: ")
    assert "systemctl --user daemon-reload && systemctl --user enable --now mcp-orchestrator.service" in err
    if shutil.which("systemctl"):
        assert "'systemctl --user daemon-reload' failed" in err
    assert unit_path(home).stat().st_mode & 0o077 == 0  # a store URL may hold a password

    code, out, _ = run(capsys, "service", "install", "--no-start", "--db", str(db))
    assert code == 0 and f"kept (unchanged) {unit_path(home)}" in out and "not started (--no-start)" in out
    secret = ["--no-start", "--db", str(db), "--env", "ANTHROPIC_API_KEY=sk-secret-value"]
    code, out, _ = run(capsys, "service", "install", *secret)
    code, out, _ = run(capsys, "service", "status", "--json")
    shown = json.loads(out)["environment"]
    assert shown["ANTHROPIC_API_KEY"] == "***" and "sk-secret" not in out  # the file keeps it, status does not
    assert shown["MCP_ORCHESTRATOR_DB"] == str(db)

    code, out, _ = run(capsys, "service", "status", "--json", "--db", str(tmp_path / "elsewhere.db"))
    status = json.loads(out)
    assert code == 0 and status["installed"] and status["path"] == str(unit_path(home))
    assert status["store"] == str(db)  # the installed unit's store, not this command's
    assert status["runnable"] and status["lease_holder"] is None and not status["lease_held_by_service"]
    if shutil.which("systemctl"):
        assert "Failed to connect to bus" in status["manager_error"]

    code, out, _ = run(capsys, "service", "uninstall")
    assert code == 0 and f"removed {unit_path(home)}" in out and not unit_path(home).exists()
    code, out, _ = run(capsys, "service", "uninstall")
    assert code == 0 and out == f"nothing to remove: no service file at {unit_path(home)}\n"
    code, out, _ = run(capsys, "service", "status")
    assert code == 0 and "not installed" in out and "install:   mcp-orchestrator service install" in out


def test_xdg_config_home_places_the_unit(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    code, out, _ = run(capsys, "service", "install", "--no-start", "--db", str(tmp_path / "store.db"))
    assert code == 0 and (tmp_path / "config" / "systemd" / "user" / "mcp-orchestrator.service").exists(), out


def test_with_a_user_manager_install_enables_and_restarts_only_when_changed(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, _ = fake_systemctl(tmp_path, monkeypatch)
    db = str(tmp_path / "store.db")
    assert run(capsys, "service", "install", "--db", db)[0] == 0
    code, out, _ = run(capsys, "service", "install", "--db", db)
    assert code == 0 and "loginctl enable-linger" in out and "journalctl --user -u mcp-orchestrator.service" in out
    assert log.read_text().splitlines() == [
        "--user daemon-reload",
        "--user enable mcp-orchestrator.service",
        "--user restart mcp-orchestrator.service",  # new: restarted, so a running one takes the new file
        "--user daemon-reload",
        "--user enable mcp-orchestrator.service",
        "--user start mcp-orchestrator.service",  # unchanged: left running
    ]
    log.unlink()
    code, out, _ = run(capsys, "service", "uninstall")
    assert code == 0 and "stopped and disabled mcp-orchestrator.service" in out
    assert log.read_text().splitlines() == ["--user disable --now mcp-orchestrator.service", "--user daemon-reload"]


def test_launchd_without_launchctl_writes_the_plist_and_says_what_to_run(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no launchctl (nor anything else)
    plist = home / "Library" / "LaunchAgents" / "mcp-orchestrator.plist"
    code, _, err = run(capsys, "service", "install", "--kind", "launchd", "--db", str(tmp_path / "store.db"))
    assert code == 1 and plist.exists() and err.startswith(f"config_error: {NO_BUS}: ")
    assert f"launchctl bootstrap gui/{os.getuid()} {plist}" in err and "launchctl is not on PATH" in err
    assert (Path(os.environ["XDG_STATE_HOME"]) / "mcp-orchestrator" / "logs").is_dir()  # launchd opens the log there
    code, out, _ = run(capsys, "service", "status", "--kind", "launchd")
    assert code == 0 and f"installed at {plist}" in out and "launchctl is not on PATH" in out
    code, out, _ = run(capsys, "service", "uninstall", "--kind", "launchd")
    assert code == 0 and not plist.exists() and f"removed {plist}" in out


# Bad input and unknown systems.


def test_windows_is_told_what_to_run_instead(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    code, _, err = run(capsys, "service", "install")
    assert code == 1 and err.startswith("config_error: 'service' knows systemd (Linux) and launchd (macOS), not")
    assert "-m mcp_orchestrator supervise' under the system's own service manager" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--env", "NOEQUALS"], "invalid_input: --env 'NOEQUALS': give NAME=VALUE"),
        (["--env", "1BAD=x"], "invalid_input: --env '1BAD=x': give NAME=VALUE"),
        (["--env", "X=a\nb"], "invalid_input: X 'a\\nb' holds the control character '\\n' at position 1"),
        (["--db", "/srv/a\tb.db"], "invalid_input: MCP_ORCHESTRATOR_DB '/srv/a\\tb.db' holds the control character"),
    ],
    ids=["no-equals", "bad-name", "newline", "tab-in-db"],
)
def test_bad_input_names_what_to_fix(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code, out, err = run(capsys, "service", "install", "--print", *argv)
    assert code == 1 and out == "" and err.startswith(expected), err


def test_an_unknown_kind_lists_the_known_ones(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["service", "status", "--kind", "upstart"])
    said = capsys.readouterr().err
    assert exited.value.code == 2 and "invalid choice: 'upstart'" in said and "systemd" in said and "launchd" in said


def test_an_unwritable_unit_directory_is_named_with_the_fix(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(blocker))
    code, _, err = run(capsys, "service", "install", "--db", str(tmp_path / "store.db"))
    assert code == 1 and err.startswith(f"config_error: cannot create {blocker}/systemd/user: "), err
    assert "create it yourself, writable by you" in err


# The real thing: what the unit says to run, run with nothing else on the store.


async def in_thread(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``run`` from a test's event loop (a command runs its own)."""
    return await anyio.to_thread.run_sync(lambda: run(capsys, *argv))


async def fired(engine: Engine, count: int) -> bool:
    return len(await engine.schedules.history("beat", 1000)) >= count


async def holder_pid(engine: Engine, pid: int) -> bool:
    holder = await lease_holder(engine)
    return holder is not None and holder.split(":")[-2] == str(pid)


@pytest.mark.processes
@pytest.mark.anyio
async def test_the_units_command_fires_schedules_alone_and_stops_cleanly(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, main_pid = fake_systemctl(tmp_path, monkeypatch)
    (tmp_path / AWKWARD).mkdir()
    db = str(tmp_path / AWKWARD / "100% sure.db")
    config = tmp_path / "config.toml"
    config.write_text("[supervisor]\nlease_ttl_s = 1\n")  # a takeover within a second or two
    code, out, err = await in_thread(capsys, "service", "install", "--db", db, "--config", str(config))
    assert code == 0, err
    command, environment = read_as_a_shell_would(unit_path(home).read_text())
    assert environment["MCP_ORCHESTRATOR_DB"] == db and environment["MCP_ORCHESTRATOR_CONFIG"] == str(config)

    def start() -> subprocess.Popen[bytes]:
        """What systemd runs: the command, in the user manager's environment plus the unit's."""
        return subprocess.Popen(command, env={"HOME": str(home), **environment}, stderr=subprocess.DEVNULL)

    service = start()
    try:
        cli(db, "schedules", "add", "beat", "--every", "1", "--action", '{"type": "send_event", "name": "beat"}')
        async with engine_on(db, config) as engine:
            await eventually(lambda: fired(engine, 1), timeout=15)
            main_pid.write_text(f"{service.pid}\n")
            code, out, _ = await in_thread(capsys, "service", "status", "--json")
            status = json.loads(out)
            assert status["active"] == "active" and status["pid"] == service.pid and status["store"] == db
            assert status["lease_held_by_service"], status
            code, out, _ = await in_thread(capsys, "service", "status")
            assert f"active:    active (pid {service.pid})" in out and "(this service)" in out

            service.send_signal(signal.SIGTERM)
            assert service.wait(timeout=10) == 0  # a clean stop: Restart=on-failure leaves it stopped
            assert await lease_holder(engine) is None  # given up at once, not left to expire

            # Killed (what Restart=on-failure answers): the next one takes over when the lease expires.
            service = start()
            await eventually(lambda: holder_pid(engine, service.pid), timeout=15)
            service.kill()
            service.wait()
            before = len(await engine.schedules.history("beat", 1000))
            service = start()
            await eventually(lambda: fired(engine, before + 1), timeout=15)
    finally:
        service.kill()
        service.wait()
