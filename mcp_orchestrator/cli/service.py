"""Schedules that fire with no session open: ``service install|uninstall|status``.

A per-user service runs ``supervise`` by this installation's absolute path and restarts it when it
fails: a systemd user unit on Linux, a launchd agent on macOS. It holds the supervisor lease whenever
no other process does, so schedules fire, timers end and queued sub-agents start with no session open.
The store, the config and the PATH of the shell that installs it are written into the file, so the
service sees what that shell sees. Without a reachable service manager (a container, CI, ``su``) the
file is still written, and the command fails saying what to run.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ..config import ENV_CONFIG, ENV_DB, ENV_MAX_PAYLOAD, ENV_NODE, ENV_SYNCHRONOUS, Settings, state_dir
from ..errors import ConfigError, InvalidInput, OrchestratorError
from ..store import absolute_location, shown_location, sqlite_path
from .command import Commands, add_command, with_engine
from .render import print_fields, print_json, when
from .unitfiles import (
    LABEL,
    UNIT_NAME,
    ServiceSpec,
    check_value,
    launchd_plist,
    read_launchd_plist,
    read_systemd_unit,
    systemd_unit,
)

Kind = Literal["systemd", "launchd"]
MANAGER_TIMEOUT_S = 30.0
PASSED_ON = (ENV_MAX_PAYLOAD, ENV_SYNCHRONOUS, ENV_NODE)  # this shell's settings the service keeps
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def add_commands(commands: Commands) -> None:
    service = commands.add_parser(
        "service",
        help="run the supervisor as a per-user service, so schedules fire with no session open",
        description="Install, remove or inspect a per-user service that runs 'mcp-orchestrator supervise' by this "
        "installation's absolute path and restarts it when it fails: a systemd user unit on Linux, a launchd agent "
        "on macOS. It fires schedules and timers and starts queued sub-agents whenever no other process holds the "
        "supervisor lease. Elsewhere (Windows), run 'mcp-orchestrator supervise' under the system's own service "
        "manager.",
    )
    actions = service.add_subparsers(dest="service_command", metavar="SUBCOMMAND", required=True)
    install = add_command(
        actions,
        "install",
        _install,
        json=False,
        help="write the service file, enable and start the service",
        description="Write the service file and start the service: on Linux "
        f"$XDG_CONFIG_HOME/systemd/user/{UNIT_NAME} (default ~/.config/...), then 'systemctl --user daemon-reload' "
        f"and 'enable' and (re)start it; on macOS ~/Library/LaunchAgents/{LABEL}.plist, loaded with 'launchctl "
        "bootstrap gui/$UID', its output in the state directory's logs/service.log. The service runs with the "
        f"store and config given here (--db, --config, {ENV_DB}, {ENV_CONFIG}), this shell's PATH (so agents' "
        f"commands are found as here), {', '.join(PASSED_ON)} and OTEL_* when set, and each --env. Running it "
        "again rewrites the file and restarts the service if the file changed. When the service manager cannot "
        "be reached (no user session bus: a container, CI, su or sudo) the file is still written and the "
        "command exits 1 saying what to run; --no-start only writes it. On Linux the service starts when you "
        "log in and stops when you log out, unless 'loginctl enable-linger' keeps it running from boot.",
    )
    install.add_argument("--no-start", action="store_true", help="write the file only; print how to start it")
    install.add_argument(
        "--print", dest="print_only", action="store_true", help="print the file it would write; write nothing"
    )
    install.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="one more environment variable for the service (repeatable), e.g. ANTHROPIC_API_KEY=...",
    )
    uninstall = add_command(
        actions,
        "uninstall",
        _uninstall,
        json=False,
        help="stop and disable the service, remove its file",
        description="Stop and disable the service (when its manager can be reached) and remove its file; "
        "says what it did. Nothing installed is not an error. Sub-agents it started run on: another "
        "orchestrator process watches them.",
    )
    status = add_command(
        actions,
        "status",
        _status,
        help="where the service file is, whether it runs, and who holds the supervisor lease",
        description="Show the service file and whether it is installed, enabled and running (systemctl --user "
        "is-enabled / is-active, or launchctl print), the command it runs, its store, and which process holds "
        "that store's supervisor lease now: this service, another process (a session's MCP server, serve "
        "--http, supervise), or nobody. Exits 0 whatever the state; --json for scripts.",
    )
    for action in (install, uninstall, status):
        action.add_argument(
            "--kind",
            choices=["systemd", "launchd"],
            help="the service manager (default: systemd on Linux, launchd on macOS)",
        )


class ServiceStatus(BaseModel):
    """What ``service status --json`` prints."""

    kind: Kind
    path: str = Field(description="The service file (whether or not it exists).")
    installed: bool
    enabled: str | None = Field(
        description="systemctl's is-enabled answer (enabled, disabled ...) or launchd's loaded / not loaded; "
        "null when the manager could not be asked."
    )
    active: str | None = Field(
        description="systemctl's is-active answer (active, inactive, failed ...) or launchd's state; null when unknown."
    )
    pid: int | None = Field(description="The service's process, when it runs.")
    manager_error: str | None = Field(description="Why the service manager could not be asked.")
    command: list[str] = Field(description="What the service runs (installed), or would run (not installed).")
    runnable: bool = Field(description="Whether the command's program exists; false: run install again.")
    environment: dict[str, str] = Field(description="Its environment; values not its own settings or PATH as ***.")
    store: str = Field(description="The store it serves (a URL's password as ***).")
    lease_holder: str | None = Field(description="node:pid:tag of the supervisor lease's holder; null: nobody.")
    lease_expires_at: datetime | None
    lease_held_by_service: bool = Field(description="Whether the holder is the service's own process.")
    lease_error: str | None = Field(description="Why the store could not be read.")


@dataclass(frozen=True)
class ManagerState:
    enabled: str | None
    active: str | None
    pid: int | None
    error: str | None


class NotStarted(Exception):
    """The service manager could not be reached, or refused; the message says what it answered."""


def _install(args: argparse.Namespace, settings: Settings) -> int:
    kind = _kind(args)
    spec = _spec(args, settings)
    content = _render(kind, spec)
    if args.print_only:
        sys.stdout.write(content.decode())
        return 0
    with_engine(settings, lambda engine: engine.subagents.lease_holder())  # a bad store fails here, not in a loop
    path = _path(kind)
    changed = _write(path, content)
    if kind == "launchd":
        _make_dir(spec.log_file.parent)
    store = spec.environment[ENV_DB]
    what = f"{'wrote' if changed else 'kept (unchanged)'} {path}: runs {' '.join(spec.command)} on the store {store}"
    if args.no_start:
        print(f"{what}\nnot started (--no-start); start it with: {_start_commands(kind, path)}")
        return 0
    try:
        started = _start(kind, path, changed)
    except NotStarted as exc:
        print(what)
        raise ConfigError(
            f"the service file is written but the service is not running: {exc}. In a login session of this user "
            f"(not su, sudo, a container or CI), run: {_start_commands(kind, path)} (or this command again); "
            "without a service manager, keep 'mcp-orchestrator supervise' running some other way"
        ) from None
    print(f"{what}\n{started}")
    if kind == "systemd":
        print(f"logs: journalctl --user -u {UNIT_NAME}; check: mcp-orchestrator service status")
        if not _lingers():
            print("it stops when you log out; to keep it running from boot: loginctl enable-linger")
    else:
        print(f"logs: {spec.log_file}; check: mcp-orchestrator service status")
    return 0


def _uninstall(args: argparse.Namespace, settings: Settings) -> int:
    kind = _kind(args)
    path = _path(kind)
    if not path.exists():
        print(f"nothing to remove: no service file at {path}")
        return 0
    print(_stop(kind))
    try:
        path.unlink()
        if kind == "systemd":
            (path.parent / "default.target.wants" / UNIT_NAME).unlink(missing_ok=True)  # if disable could not
    except OSError as exc:
        raise ConfigError(
            f"cannot remove {exc.filename or path}: {exc.strerror}; check its directory's permissions, or remove it "
            "yourself"
        ) from None
    if kind == "systemd":
        _manager(["systemctl", "--user", "daemon-reload"])  # best effort: it forgets the unit at its next start anyway
    print(f"removed {path}")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    kind = _kind(args)
    path = _path(kind)
    installed = path.exists()
    if installed:
        try:
            data = path.read_bytes()
            command, environment = read_systemd_unit(data.decode()) if kind == "systemd" else read_launchd_plist(data)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the service file {path} ({exc}); run 'mcp-orchestrator service install' again"
            ) from None
        state = _state(kind)
    else:
        spec = _spec(args, settings)
        command, environment = spec.command, spec.environment
        state = ManagerState("not installed", None, None, None)
    store = environment.get(ENV_DB) or settings.db
    lease, lease_error = _lease(settings.model_copy(update={"db": store}))
    node = environment.get(ENV_NODE) or settings.node
    by_service = lease is not None and state.pid is not None and lease[0].rsplit(":", 2)[:2] == [node, str(state.pid)]
    result = ServiceStatus(
        kind=kind,
        path=str(path),
        installed=installed,
        enabled=state.enabled,
        active=state.active,
        pid=state.pid,
        manager_error=state.error,
        command=command,
        runnable=bool(command) and os.access(command[0], os.X_OK),
        environment=_shown(environment),
        store=shown_location(store),
        lease_holder=lease[0] if lease else None,
        lease_expires_at=lease[1] if lease else None,
        lease_held_by_service=by_service,
        lease_error=lease_error,
    )
    if args.json:
        return print_json(result)
    _print_status(result)
    return 0


def _shown(environment: dict[str, str]) -> dict[str, str]:
    """The service's environment as status may print it: its own settings and PATH, the store's password
    masked; other values (--env API keys, OTEL headers) as *** (the file itself is owner-only)."""
    shown = {name: value if name == "PATH" or name.startswith("MCP_") else "***" for name, value in environment.items()}
    if ENV_DB in shown:
        shown[ENV_DB] = shown_location(shown[ENV_DB])
    return shown


def _print_status(status: ServiceStatus) -> None:
    what = "systemd user unit" if status.kind == "systemd" else "launchd agent"
    where = f"installed at {status.path}" if status.installed else f"not installed (would be {status.path})"
    active = f"{status.active} (pid {status.pid})" if status.pid else status.active
    runs = " ".join(status.command)
    if not status.runnable:
        runs += f"  (missing: {status.command[0] if status.command else 'no command'}; run 'service install' again)"
    if status.lease_error:
        lease = f"unknown: {status.lease_error}"
    elif status.lease_holder is None:
        lease = "nobody: due schedules wait until an orchestrator process takes it"
    else:
        whose = (
            "this service"
            if status.lease_held_by_service
            else "another process: a session's server, serve, or supervise"
        )
        lease = f"held by {status.lease_holder} until {when(status.lease_expires_at)} ({whose})"
    print_fields(
        [
            ("service", f"{what}, {where}"),
            ("enabled", status.enabled),
            ("active", active),
            ("manager", f"cannot be asked: {status.manager_error}" if status.manager_error else None),
            ("runs", runs),
            ("store", status.store),
            ("lease", lease),
            ("install", None if status.installed else "mcp-orchestrator service install"),
        ]
    )


# What the service runs, and its file.


def _kind(args: argparse.Namespace) -> Kind:
    if args.kind is not None:
        chosen: Kind = args.kind
        return chosen
    if sys.platform.startswith("linux"):
        return "systemd"
    if sys.platform == "darwin":
        return "launchd"
    raise ConfigError(
        f"'service' knows systemd (Linux) and launchd (macOS), not this system ({sys.platform}); run "
        f"'{Path(sys.executable).absolute()} -m mcp_orchestrator supervise' under the system's own service "
        "manager (on Windows: a Task Scheduler task at log on, restarted on failure), with "
        f"{ENV_DB} set to the store"
    )


def _spec(args: argparse.Namespace, settings: Settings) -> ServiceSpec:
    if not sys.executable:
        raise ConfigError("this Python does not know its own executable; run 'service install' from a normal install")
    environment = {ENV_DB: absolute_location(settings.db)}
    if settings.config_file is not None and (args.config or os.environ.get(ENV_CONFIG)):
        environment[ENV_CONFIG] = str(settings.config_file.absolute())
    for name in (*PASSED_ON, *sorted(name for name in os.environ if name.startswith("OTEL_"))):
        if os.environ.get(name):
            environment[name] = os.environ[name]
    entries = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if os.path.isabs(entry)]
    environment["PATH"] = os.pathsep.join(dict.fromkeys(entries)) or os.defpath
    for assignment in getattr(args, "env", []):
        name, equals, value = assignment.partition("=")
        if not equals or not _ENV_NAME.fullmatch(name):
            raise InvalidInput(f"--env {assignment!r:.100}: give NAME=VALUE, NAME of letters, digits and _")
        environment[name] = value
    # Absolute and normalized (systemd refuses a path with '..'), symlinks kept: a venv's python is one.
    command = [os.path.abspath(sys.executable), "-m", "mcp_orchestrator", "supervise"]
    for part in command:
        check_value("the Python path", part)
    for name, value in environment.items():
        check_value(name, value)
    return ServiceSpec(command, environment, Path.home(), state_dir() / "logs" / "service.log")


def _render(kind: Kind, spec: ServiceSpec) -> bytes:
    return systemd_unit(spec).encode() if kind == "systemd" else launchd_plist(spec)


def _path(kind: Kind) -> Path:
    if kind == "launchd":
        return Path.home() / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    config_home = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(config_home) if os.path.isabs(config_home) else Path.home() / ".config"
    return base / "systemd" / "user" / UNIT_NAME


def _write(path: Path, content: bytes) -> bool:
    """Write ``content`` at ``path`` at once (owner-only: a store URL may hold a password); False when it
    was there already."""
    with contextlib.suppress(OSError):
        if path.read_bytes() == content:
            return False
    _make_dir(path.parent)
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as file:
            file.write(content)
        os.replace(temporary, path)
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: {exc.strerror}; make {path.parent} writable by you"
            + (" or set XDG_CONFIG_HOME to a directory you own" if path.suffix == ".service" else "")
        ) from None
    return True


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create {exc.filename or directory}: {exc.strerror}; create it yourself, writable by you"
        ) from None


# The service manager.


def _manager(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """A service manager command's outcome; a missing program or a hang is a failed outcome saying so."""
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=MANAGER_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False
        )
    except FileNotFoundError:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]} is not on PATH")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, 1, "", f"{argv[0]} could not run: {exc}")


def _said(done: subprocess.CompletedProcess[str]) -> str:
    said = " ".join((done.stderr or done.stdout).split())[:500]
    return f"'{' '.join(done.args[:3])}' failed (exit {done.returncode}): {said or 'no message'}"


def _domain() -> str:
    return f"gui/{os.getuid()}"


def _start_commands(kind: Kind, path: Path) -> str:
    if kind == "systemd":
        return f"systemctl --user daemon-reload && systemctl --user enable --now {UNIT_NAME}"
    return f"launchctl bootstrap {_domain()} {path}"


def _start(kind: Kind, path: Path, changed: bool) -> str:
    """Load the file and (re)start the service; what was done, or NotStarted."""
    if kind == "systemd":
        for step in (["daemon-reload"], ["enable", UNIT_NAME], ["restart" if changed else "start", UNIT_NAME]):
            done = _manager(["systemctl", "--user", *step])
            if done.returncode != 0:
                raise NotStarted(_said(done))
        return f"enabled and {'(re)started' if changed else 'started'} {UNIT_NAME}"
    target = f"{_domain()}/{LABEL}"
    loaded = _manager(["launchctl", "print", target]).returncode == 0
    if loaded and not changed:
        return f"{LABEL} is loaded already"
    if loaded:
        _manager(["launchctl", "bootout", target])
    _manager(["launchctl", "enable", target])
    done = _manager(["launchctl", "bootstrap", _domain(), str(path)])
    if done.returncode != 0:
        raise NotStarted(_said(done))
    return f"loaded {LABEL} into {_domain()}: it starts now and at each login"


def _stop(kind: Kind) -> str:
    """Stop and disable the service if its manager can be reached; what was done."""
    if kind == "systemd":
        done = _manager(["systemctl", "--user", "disable", "--now", UNIT_NAME])
        if done.returncode == 0:
            return f"stopped and disabled {UNIT_NAME}"
        return f"could not stop it ({_said(done)}); if it still runs, run: systemctl --user stop {UNIT_NAME}"
    done = _manager(["launchctl", "bootout", f"{_domain()}/{LABEL}"])
    if done.returncode == 0:
        return f"stopped and unloaded {LABEL}"
    return f"not loaded, or could not unload it ({_said(done)})"


def _state(kind: Kind) -> ManagerState:
    if kind == "systemd":
        enabled = _manager(["systemctl", "--user", "is-enabled", UNIT_NAME])
        active = _manager(["systemctl", "--user", "is-active", UNIT_NAME])
        pid = _manager(["systemctl", "--user", "show", "--property", "MainPID", "--value", UNIT_NAME])
        errors = [_said(done) for done in (enabled, active) if not done.stdout.strip()]
        return ManagerState(
            enabled.stdout.strip() or None,
            active.stdout.strip() or None,
            int(pid.stdout) if pid.returncode == 0 and pid.stdout.strip().isdigit() and int(pid.stdout) else None,
            "; ".join(dict.fromkeys(errors)) or None,
        )
    done = _manager(["launchctl", "print", f"{_domain()}/{LABEL}"])
    if done.returncode == 127:  # no launchctl: not macOS
        return ManagerState(None, None, None, done.stderr)
    if done.returncode != 0:
        return ManagerState("not loaded", None, None, None)
    state = re.search(r"^\s*state = (\S+)", done.stdout, re.MULTILINE)
    running = re.search(r"^\s*pid = (\d+)", done.stdout, re.MULTILINE)
    return ManagerState("loaded", state.group(1) if state else None, int(running.group(1)) if running else None, None)


def _lingers() -> bool:
    """Whether logind keeps this user's service manager running from boot (loginctl enable-linger)."""
    with contextlib.suppress(KeyError, OSError):
        return Path("/var/lib/systemd/linger", getpass.getuser()).exists()
    return False


def _lease(settings: Settings) -> tuple[tuple[str, datetime] | None, str | None]:
    """The supervisor lease of the service's store, or why it could not be read (a store not yet created is
    not created here)."""
    path = sqlite_path(settings.db)
    if path is not None and not path.exists():
        return None, None
    try:
        return with_engine(settings, lambda engine: engine.subagents.lease_holder()), None
    except OrchestratorError as exc:
        return None, f"{exc.code}: {exc.message}"
