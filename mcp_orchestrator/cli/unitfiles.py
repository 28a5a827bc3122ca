"""The files a service manager starts the supervisor from: a systemd user unit and a launchd agent plist.

Text in, text out, and back: ``service status`` reads the command and environment of the installed file.
A systemd unit quotes its values: C escapes inside double quotes, ``%%`` for a percent sign (both
lines expand specifiers) and ``$$`` for a dollar sign in ``ExecStart``'s arguments (which expand
variables; its program path does not), so that a path with spaces, quotes, ``%`` or ``$`` reaches the
process exactly. The plist is plistlib's.
"""

from __future__ import annotations

import plistlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InvalidInput

UNIT_NAME = "mcp-orchestrator.service"
LABEL = "mcp-orchestrator"  # the launchd job's label and the plist's name
RESTART_S = 5  # between a crash and the restart: a store that is down is not hammered

_CONTROL = re.compile("[\x00-\x1f\x7f]")
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")  # a word that needs no quotes in a unit file
_UNSAFE_PROGRAM = re.compile(r"[\"'\\]")  # systemd: "Executable name contains special characters"


@dataclass(frozen=True)
class ServiceSpec:
    """What the service runs: the command, its environment, and (launchd) its directory and log file."""

    command: list[str]
    environment: dict[str, str]
    working_directory: Path
    log_file: Path


def check_value(what: str, value: str) -> str:
    """``value`` if a service file can carry it: no control characters, encodable as UTF-8."""
    if (found := _CONTROL.search(value)) is not None:
        raise InvalidInput(
            f"{what} {value!r:.200} holds the control character {found.group()!r} at position {found.start()}, "
            "which a service file cannot carry; remove it"
        )
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{what} {value!r:.200} is not valid UTF-8 at position {exc.start}, which a service file cannot carry; "
            "rename the path or give another value"
        ) from None
    return value


def systemd_unit(spec: ServiceSpec) -> str:
    """The user unit: restarted on failure, started with the user's service manager."""
    if _UNSAFE_PROGRAM.search(spec.command[0]):
        raise ConfigError(
            f"systemd refuses to run a program whose path holds a quote or a backslash: {spec.command[0]}; "
            "install mcp-orchestrator (its Python environment) in a directory whose path has none"
        )
    environment = "".join(
        f"Environment={_word(f'{name}={value}', force=True)}\n" for name, value in spec.environment.items()
    )
    return f"""\
# Written by 'mcp-orchestrator service install'; 'mcp-orchestrator service uninstall' removes it.
[Unit]
Description=mcp-orchestrator supervisor: schedules, timers and queued sub-agents

[Service]
Type=exec
ExecStart={_exec_line(spec.command)}
{environment}Restart=on-failure
RestartSec={RESTART_S}
# Stop the supervisor alone: sub-agents it started run on, and the next supervisor watches them.
KillMode=process

[Install]
WantedBy=default.target
"""


def read_systemd_unit(text: str) -> tuple[list[str], dict[str, str]]:
    """The command (``ExecStart``) and environment of a unit this module wrote (specifiers other than
    ``%%`` are left as they are)."""
    command: list[str] = []
    environment: dict[str, str] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line.startswith("ExecStart="):
            words = _words(line.removeprefix("ExecStart="))
            command = words[:1] + [argument.replace("$$", "$") for argument in words[1:]]
        elif section == "[Service]" and line.startswith("Environment="):
            for word in _words(line.removeprefix("Environment=")):
                name, _, value = word.partition("=")
                environment[name] = value
    return command, environment


def launchd_plist(spec: ServiceSpec) -> bytes:
    """The launch agent: started at login, restarted when it exits with an error."""
    return plistlib.dumps(
        {
            "Label": LABEL,
            "ProgramArguments": spec.command,
            "EnvironmentVariables": spec.environment,
            "WorkingDirectory": str(spec.working_directory),
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},
            "ThrottleInterval": RESTART_S * 2,
            "ProcessType": "Background",
            # Stop the supervisor alone: sub-agents it started run on, and the next supervisor watches them.
            "AbandonProcessGroup": True,
            "StandardOutPath": str(spec.log_file),
            "StandardErrorPath": str(spec.log_file),
        }
    )


def read_launchd_plist(data: bytes) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a launch agent's plist."""
    document = plistlib.loads(data)
    if not isinstance(document, dict):
        raise ValueError("the plist does not hold a dictionary")
    command = document.get("ProgramArguments") or []
    environment = document.get("EnvironmentVariables") or {}
    return [str(part) for part in command], {str(name): str(value) for name, value in environment.items()}


def _exec_line(command: list[str]) -> str:
    """``ExecStart``'s value: variables are expanded in the arguments, not in the program's path."""
    program, *arguments = command
    return " ".join([_word(program), *(_word(argument, dollars=True) for argument in arguments)])


def _word(value: str, *, dollars: bool = False, force: bool = False) -> str:
    """One word of a unit file's line, as systemd reads it back to ``value``."""
    value = value.replace("%", "%%")
    if dollars:
        value = value.replace("$", "$$")
    if _PLAIN.fullmatch(value) and not force:
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _words(line: str) -> list[str]:
    """The words of a value this module wrote (double quotes with ``\\`` and ``\"`` escapes, as a POSIX
    shell reads them), ``%%`` made ``%``."""
    return [word.replace("%%", "%") for word in shlex.split(line)]
