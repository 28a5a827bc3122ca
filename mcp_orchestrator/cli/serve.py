"""The long-running commands and their credential: serve (MCP over stdio or HTTP), supervise, token.

The server's libraries (mcp, starlette, uvicorn) are imported inside the commands that need them,
so that every other command, and ``--version``, starts without them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import signal
import socket
import sys

from .. import __version__
from ..config import Settings
from ..errors import ConfigError
from ..runtime import open_engine
from .command import Commands, add_command


def add_commands(commands: Commands) -> None:
    serve = add_command(
        commands,
        "serve",
        _serve,
        help="run the MCP server (stdio, or streamable HTTP with --http)",
        description="Run the MCP server. Without --http it speaks MCP over stdin/stdout, as Claude Code "
        "and OpenCode start it. With --http it serves streamable HTTP at http://HOST:PORT/mcp and a "
        "health check at /healthz; port 0 picks a free port, and the address is printed on stderr.",
        json=False,
    )
    serve.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve over HTTP on this address (default host 127.0.0.1; e.g. --http 8765 or --http 127.0.0.1:8765)",
    )
    serve.add_argument(
        "--no-token",
        action="store_true",
        help="with --http on a loopback address: accept requests without the bearer token (for local "
        "tools that cannot send one, such as the MCP conformance suite); anyone on this machine can then call it",
    )
    add_command(
        commands,
        "supervise",
        _supervise,
        help="run the background duties without serving MCP",
        description="Fire timers and supervise sub-agents (start queued ones, retry, reap) until interrupted. "
        "Every 'serve' does this too. One process per store holds the supervisor lease (schedules, retention, "
        "traces) and one per node the node's lease (starting and reaping that node's sub-agents); the others "
        "stand by and take over when a holder stops renewing.",
        json=False,
    )
    add_command(
        commands,
        "token",
        _token,
        help="print the HTTP server's bearer token",
        description="Print the bearer token that every HTTP request but /healthz needs (created on first use, "
        'readable by you alone), e.g. for Claude Code: --header "Authorization: Bearer $(mcp-orchestrator token)".',
        json=False,
    )


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.http is None:
        if sys.stdin is not None and sys.stdin.isatty():  # a person, not a client (clients give a pipe)
            print(_stdio_on_a_terminal(settings), file=sys.stderr, flush=True)
        asyncio.run(_serve_stdio(settings))
        return 0
    host, port = _parse_address(args.http)
    if args.no_token and not _is_loopback(host):
        raise ConfigError(f"--no-token serves without authentication: only on a loopback address, not {host}")
    asyncio.run(_serve_http(settings, host, port, token_required=not args.no_token))
    return 0


def _stdio_on_a_terminal(settings: Settings) -> str:
    """What 'serve' on a terminal is waiting for, and the ways a person uses it instead."""
    return f"""\
mcp-orchestrator {__version__}: serving MCP over stdio, store {settings.db}.
It is waiting for an MCP client to send JSON-RPC messages on stdin; a client such as Claude Code or
OpenCode starts it so. To use it:
  mcp-orchestrator install claude-code   register it with Claude Code (or: install opencode)
  mcp-orchestrator serve --http 8765     serve over HTTP, with the dashboard at http://127.0.0.1:8765/
  mcp-orchestrator runs                  the runs in the store ('mcp-orchestrator --help' for the rest)
Still serving here: Ctrl-D or Ctrl-C stops it."""


async def _serve_stdio(settings: Settings) -> None:
    from ..server import build_server, lend
    from ..stdio import line_limit, serve_stdio

    async with open_engine(settings) as engine:  # a bad store fails here, before MCP starts
        server = build_server(settings, engine_scope=lend(engine))
        _keep_what_start_up_made()
        await serve_stdio(server, line_limit(settings.max_payload_bytes))  # answers even unreadable requests


async def _serve_http(settings: Settings, host: str, port: int, token_required: bool = True) -> None:
    import uvicorn

    from ..tokens import load_or_create_token
    from ..web import build_app
    from ..web.limits import MAX_HEADER_BYTES

    sock = listening_socket(host, port)
    if not _is_loopback(host):
        print(
            f"warning: serving on {host}, reachable from other machines: requests are authenticated by the token, "
            "but the traffic is plain HTTP, readable (token included) by anyone on the network path; "
            f"clients must use Host {f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]} exactly",
            file=sys.stderr,
        )
    token = load_or_create_token(settings.token_file) if token_required else None
    async with open_engine(settings) as engine:  # a bad store fails here, with its own message
        app = build_app(settings, engine, token, host=host, port=sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_level="warning",
            http="h11",  # a pure-Python parser whose header limit we set
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,  # request line + headers, else 400
        )
        server = uvicorn.Server(config)
        _keep_what_start_up_made()
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
            url = f"http://{shown}:{sock.getsockname()[1]}/mcp"
            access = (
                f"requests need the bearer token in {settings.token_file} ('mcp-orchestrator token')"
                if token is not None
                else "no token needed (--no-token)"
            )
            print(
                f"mcp-orchestrator {__version__}: MCP at {url}, store {settings.db}; {access}",
                file=sys.stderr,
                flush=True,
            )
            if sys.stderr.isatty():  # a person started it: one click signs in (never into a log or journal)
                print(f"dashboard: {_sign_in_link(url.removesuffix('/mcp'), token)}", file=sys.stderr, flush=True)
        await serving


def _keep_what_start_up_made() -> None:
    """What start-up made (the libraries' ~90,000 objects: the SDK, pydantic, Starlette) lives as long as the
    process, so the collector leaves it out of later collections (``gc.freeze``). Otherwise every full
    collection walks it all, a 30-40 ms pause for whichever call meets it: the p99 of a status."""
    gc.freeze()


def listening_socket(host: str, port: int) -> socket.socket:
    """The HTTP server's socket, bound. Its protocol is IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on
    accepted sockets of that protocol, and without it Nagle's algorithm holds a response's body (written
    after its headers) until the client's delayed ACK: ~40 ms a request on a kept-alive connection."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def _sign_in_link(origin: str, token: str | None) -> str:
    """The dashboard's address, signing in at once: the token rides in the fragment, which the browser never
    sends (so no server log or Referer holds it); the sign-in page's script reads it, posts it and drops it."""
    return f"{origin}/login#token={token}" if token is not None else f"{origin}/"


def _parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "", value
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"--http {value!r}: expected HOST:PORT or PORT, e.g. 127.0.0.1:8765") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"--http {value!r}: the port must be 0 to 65535")
    return host, number


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    from ..supervisor import Supervisor, run_timers

    async def run() -> None:
        async with open_engine(settings) as engine:
            supervisor = Supervisor(engine, settings)
            print(f"mcp-orchestrator {__version__}: supervising the store {settings.db}", file=sys.stderr, flush=True)
            duties = asyncio.gather(run_timers(engine), supervisor.run())
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):  # stop cleanly: the lease is given up at once
                loop.add_signal_handler(signum, duties.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await duties

    asyncio.run(run())
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from ..tokens import load_or_create_token

    print(load_or_create_token(settings.token_file))
    return 0
