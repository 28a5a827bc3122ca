"""The HTTP edge under attack, against a real ``serve --http`` on loopback: Host and Origin checks,
auth (token, session cookie, signed webhooks), CSRF, content types, body and header limits, and
JSON errors. Every case here was an open hole once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import select
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import psutil
import pytest
import uvicorn

from mcp_orchestrator.config import Settings
from mcp_orchestrator.models import ListEventsInput, RunStatus, StartRunInput, StatusInput
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.web import build_app

from .support import http_token, server_pids

pytestmark = pytest.mark.anyio

SECRET = "a-webhook-secret-of-some-length"
JSON = {"Content-Type": "application/json"}
ROUTES = ["/healthz", "/api/runs", "/events", "/", "/mcp"]


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    return host.strip("[]"), int(port)


@pytest.fixture
def db(db_path: Path) -> str:
    """SQLite only, but for the tests that take ``engine``: the HTTP edge never reaches the store's SQL."""
    return str(db_path)


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=30) as http:
        yield http


async def stored_events(engine: Engine) -> list[Any]:
    return (await engine.events.list_events(ListEventsInput(limit=100))).events


# 1. A signature header is no credential, except a verified one on POST /events.


@pytest.mark.processes
@pytest.mark.parametrize("secret", [None, SECRET])
async def test_a_signature_header_does_not_open_get_or_head_events(
    http_server: Callable[..., str], client: httpx2.AsyncClient, secret: str | None
) -> None:
    base = http_server(**({"MCP_ORCHESTRATOR_WEBHOOK_SECRET": secret} if secret else {}))
    for method in ("GET", "HEAD"):
        for header in ("X-Signature-256", "X-Hub-Signature-256"):
            response = await client.request(method, f"{base}/events", headers={header: sign(b"")})
            assert response.status_code == 401, (method, header, response.text)
            assert "secret" not in response.text and "<table" not in response.text


@pytest.mark.processes
async def test_post_events_needs_a_verified_signature(
    http_server: Callable[..., str], client: httpx2.AsyncClient, engine: Engine
) -> None:
    base = http_server(MCP_ORCHESTRATOR_WEBHOOK_SECRET=SECRET)
    body = json.dumps({"name": "deploy", "data": {"env": "prod"}}).encode()
    for bad in (sign(body, "another-secret-entirely"), "sha256=00", ""):
        response = await client.post(f"{base}/events", content=body, headers={**JSON, "X-Signature-256": bad})
        assert response.status_code == 401 and response.json()["error"] in ("bad_signature", "unauthorized"), bad
    response = await client.post(f"{base}/events", content=body, headers={"X-Signature-256": sign(body)})
    assert response.status_code == 415, "a signed body must still be JSON"
    assert await stored_events(engine) == []
    response = await client.post(f"{base}/events", content=body, headers={**JSON, "X-Signature-256": sign(body)})
    assert response.status_code == 200, response.text
    assert [e.name for e in await stored_events(engine)] == ["deploy"]


# 2. Host and Origin: only the server's own, on every route, in every mode.


@pytest.mark.processes
@pytest.mark.parametrize("options", [(), ("--no-token",)])
async def test_a_foreign_host_or_origin_is_refused_everywhere(
    http_server: Callable[..., str], client: httpx2.AsyncClient, private_state_dir: Path, options: tuple[str, ...]
) -> None:
    base = http_server(*options)
    _, port = address(base)
    auth = {} if options else {"Authorization": f"Bearer {http_token(private_state_dir)}"}
    for path in ROUTES:
        for headers in (
            {"Host": "evil.example"},
            {"Host": f"evil.example:{port}"},
            {"Host": f"127.0.0.1:{port + 1}"},
            {"Origin": "http://evil.example"},
            {"Origin": f"http://127.0.0.1:{port + 1}"},  # another port of the same address: same site
            {"Origin": "null"},
        ):
            response = await client.get(f"{base}{path}", headers={**auth, **headers})
            assert response.status_code == 403, (path, headers, response.status_code)
            refused = response.json()
            assert refused["error"] in ("forbidden_host", "forbidden_origin")
            assert next(iter(headers.values()))[:20] in refused["message"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        response = await client.get(f"{base}/healthz", headers={"Host": host, "Origin": f"http://{host}"})
        assert response.status_code == 200, host


@pytest.mark.processes
async def test_no_token_on_another_loopback_address_keeps_mcp_guarded(
    http_server: Callable[..., str], client: httpx2.AsyncClient
) -> None:
    base = http_server("--http", "127.0.0.2:0", "--no-token")
    assert base.startswith("http://127.0.0.2:")
    _, port = address(base)
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    headers = {**JSON, "Accept": "application/json, text/event-stream"}
    for refused in ({"Host": "evil.example"}, {"Host": f"evil.example:{port}"}, {"Origin": "http://evil.example"}):
        response = await client.post(f"{base}/mcp", json=initialize, headers={**headers, **refused})
        assert response.status_code == 403, (refused, response.text)
    response = await client.post(f"{base}/mcp", json=initialize, headers=headers)  # Host 127.0.0.2:PORT
    assert response.status_code == 200, response.text
    response = await client.post(f"{base}/mcp", json=initialize, headers={**headers, "Origin": base})
    assert response.status_code == 200, response.text  # an MCP client may send its own, exact, Origin
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):  # names of loopback, though bound elsewhere
        response = await client.get(f"{base}/healthz", headers={"Host": host})
        assert response.status_code == 200, host


# 3. Sessions and CSRF.


async def sign_in(client: httpx2.AsyncClient, base: str, token: str) -> str:
    """Sign in through the form as a browser does; the session cookie's value."""
    response = await client.post(
        f"{base}/login", data={"token": token}, headers={"Origin": base}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    cookie = response.cookies.get("mcp_orchestrator_session")
    assert cookie, response.headers
    client.cookies.clear()  # each test sends the cookie it means to, by hand
    set_cookie = response.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie
    return cookie


async def csrf_of(client: httpx2.AsyncClient, base: str, cookie: str) -> str:
    response = await client.get(f"{base}/api/session", headers={"Cookie": f"mcp_orchestrator_session={cookie}"})
    assert response.status_code == 200, response.text
    return response.json()["csrf_token"]


@pytest.mark.processes
async def test_the_session_cookie_is_not_the_token_and_logout_revokes_it(
    http_server: Callable[..., str], client: httpx2.AsyncClient, private_state_dir: Path
) -> None:
    base = http_server()
    token = http_token(private_state_dir)
    response = await client.post(f"{base}/login", data={"token": "wrong"}, headers={"Origin": base})
    assert response.status_code == 401 and "mcp_orchestrator_session" not in response.cookies
    response = await client.post(f"{base}/login", data={"token": token}, headers={"Origin": "http://evil.example"})
    assert response.status_code == 403
    cookie = await sign_in(client, base, token)
    assert token not in cookie and cookie != token
    assert cookie != await sign_in(client, base, token), "every sign-in gets a new session"
    jar = {"Cookie": f"mcp_orchestrator_session={cookie}"}
    assert (await client.get(f"{base}/api/runs", headers=jar)).status_code == 200
    assert (
        await client.get(f"{base}/api/runs", headers={"Cookie": f"mcp_orchestrator_session={token}"})
    ).status_code == 401
    assert (
        await client.get(f"{base}/api/runs", headers={"Cookie": f"mcp_orchestrator_token={token}"})
    ).status_code == 401

    csrf = await csrf_of(client, base, cookie)
    response = await client.post(f"{base}/logout", json={}, headers={**jar, "Origin": base})
    assert response.status_code == 403, "logging out is an action: it needs the CSRF token too"
    response = await client.post(f"{base}/logout", json={}, headers={**jar, "Origin": base, "X-CSRF-Token": csrf})
    assert response.status_code == 200 and response.json() == {"signed_out": True}
    assert (await client.get(f"{base}/api/runs", headers=jar)).status_code == 401


@pytest.mark.processes
async def test_cookie_actions_need_the_origin_the_csrf_token_and_json(
    http_server: Callable[..., str], client: httpx2.AsyncClient, private_state_dir: Path, engine: Engine
) -> None:
    base = http_server()
    run_id = (await engine.runs.start_run(StartRunInput(name="keep-me"))).run.run_id
    cookie = await sign_in(client, base, http_token(private_state_dir))
    csrf = await csrf_of(client, base, cookie)
    jar = {"Cookie": f"mcp_orchestrator_session={cookie}"}
    cancel = f"{base}/api/runs/{run_id}/cancel"
    _, port = address(base)
    for headers, status in [
        ({**JSON, "Origin": base}, 403),  # no CSRF token
        ({**JSON, "Origin": base, "X-CSRF-Token": "guess"}, 403),
        ({**JSON, "X-CSRF-Token": csrf}, 403),  # no Origin
        ({**JSON, "Origin": f"http://127.0.0.1:{port + 1}", "X-CSRF-Token": csrf}, 403),  # a page on another port
        ({"Content-Type": "text/plain", "Origin": base, "X-CSRF-Token": csrf}, 415),  # a no-cors fetch's type
        ({"Content-Type": "application/x-www-form-urlencoded", "Origin": base}, 403),  # a form post
    ]:
        response = await client.post(cancel, content=b"{}", headers={**jar, **headers})
        assert response.status_code == status, (headers, response.text)
        assert response.json()["message"]
    response = await client.post(
        f"{base}/events", content=b'{"name": "approval"}', headers={**jar, "Content-Type": "text/plain", "Origin": base}
    )
    assert response.status_code == 403 and await stored_events(engine) == []
    assert (await engine.runs.status(StatusInput(run_id=run_id))).run.status == RunStatus.RUNNING

    response = await client.post(
        cancel, json={"reason": "by hand"}, headers={**jar, "Origin": base, "X-CSRF-Token": csrf}
    )
    assert response.status_code == 200, response.text
    assert (await engine.runs.status(StatusInput(run_id=run_id))).run.status == RunStatus.CANCELLED


@pytest.mark.processes
async def test_no_token_mode_refuses_browser_actions_without_the_csrf_token(
    http_server: Callable[..., str], client: httpx2.AsyncClient, engine: Engine
) -> None:
    base = http_server("--no-token")
    run_id = (await engine.runs.start_run(StartRunInput(name="keep-me"))).run.run_id
    cancel = f"{base}/api/runs/{run_id}/cancel"
    for headers, status in [
        ({**JSON, "Origin": base}, 403),  # a page of this server's origin, but without the page's token
        ({"Content-Type": "text/plain"}, 415),
        ({}, 415),  # a no-cors fetch without a body
    ]:
        response = await client.post(cancel, content=b"{}" if headers else b"", headers=headers)
        assert response.status_code == status, (headers, response.text)
    assert (await engine.runs.status(StatusInput(run_id=run_id))).run.status == RunStatus.RUNNING
    csrf = (await client.get(f"{base}/api/session")).json()["csrf_token"]
    response = await client.post(cancel, json={}, headers={"Origin": base, "X-CSRF-Token": csrf})
    assert response.status_code == 200, response.text
    other = (await engine.runs.start_run(StartRunInput(name="by-a-program"))).run.run_id
    response = await client.post(f"{base}/api/runs/{other}/cancel", json={})  # a local program: no Origin
    assert response.status_code == 200, response.text


@pytest.mark.processes
async def test_json_endpoints_take_only_json(
    http_server: Callable[..., str], client: httpx2.AsyncClient, private_state_dir: Path, engine: Engine
) -> None:
    base = http_server()
    bearer = {"Authorization": f"Bearer {http_token(private_state_dir)}"}
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
        headers = {**bearer, **({"Content-Type": content_type} if content_type else {})}
        response = await client.post(f"{base}/events", content=b'{"name": "approval"}', headers=headers)
        assert response.status_code == 415, (content_type, response.text)
        assert "application/json" in response.json()["message"]
    assert await stored_events(engine) == []
    response = await client.post(f"{base}/events", json={"name": "approval"}, headers=bearer)
    assert response.status_code == 200
    response = await client.delete(f"{base}/mcp", headers=bearer)  # an MCP session's end has no body
    assert response.status_code != 415, response.text


# 4. Bodies: refused as they stream past the limit, and without a token before they are read.


def stream_chunked(base: str, path: str, headers: dict[str, str], total: int) -> tuple[int | None, int]:
    """POST ``total`` bytes chunked over a raw socket until the server answers; (status, bytes sent)."""
    host, port = address(base)
    chunk = b"x" * 65536
    sent = 0
    with socket.create_connection((host, port), timeout=30) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nTransfer-Encoding: chunked\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        sock.sendall((head + "\r\n").encode())
        answer = b""
        try:
            while sent < total:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server has answered
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            else:
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server closed the connection after answering
            pass
        try:
            sock.settimeout(10)
            answer = sock.recv(65536)
        except OSError:
            pass
    status = int(answer.split(b" ")[1]) if answer.startswith(b"HTTP/1.1 ") else None
    return status, sent


def rss(db: str) -> int:
    (pid,) = server_pids(db)
    return psutil.Process(pid).memory_info().rss


@pytest.mark.processes
async def test_a_huge_chunked_body_without_a_token_is_refused_without_memory(
    http_server: Callable[..., str], db: str
) -> None:
    base = http_server()
    before = rss(db)
    started = time.monotonic()
    for path, headers in [
        ("/api/runs/x/cancel", JSON),  # refused on the headers: not a byte of the body is read
        ("/events", {**JSON, "X-Signature-256": "sha256=00"}),  # no secret: no signature counts
        ("/mcp", {**JSON, "Accept": "application/json, text/event-stream"}),
    ]:
        answered, sent = stream_chunked(base, path, headers, 256 * 1024 * 1024)
        assert answered in (401, None), (path, answered)
        assert sent < 64 * 1024 * 1024, f"{path}: the server read {sent} bytes before refusing"
    grown = rss(db) - before
    assert grown < 4 * 1024 * 1024, f"refused unread, yet the server grew by {grown // 1024} KiB"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    answered, sent = stream_chunked(base, "/login", form, 256 * 1024 * 1024)  # open: read up to the limit
    assert answered in (413, None) and sent < 64 * 1024 * 1024, (answered, sent)
    assert time.monotonic() - started < 30
    grown = rss(db) - before
    assert grown < 16 * 1024 * 1024, f"the server grew by {grown // 1024} KiB (the body limit is 4 MiB)"


@pytest.mark.processes
async def test_an_over_limit_chunked_body_with_the_token_gets_413(
    http_server: Callable[..., str], private_state_dir: Path, engine: Engine
) -> None:
    base = http_server(MCP_ORCHESTRATOR_MAX_PAYLOAD_BYTES=str(64 * 1024))  # a 256 KiB body limit
    headers = {**JSON, "Authorization": f"Bearer {http_token(private_state_dir)}"}
    for path in ("/events", "/api/runs/x/cancel", "/mcp"):
        answered, sent = stream_chunked(
            base, path, {**headers, "Accept": "application/json, text/event-stream"}, 8 << 20
        )
        assert answered == 413, (path, answered)
        assert sent < 4 << 20
    assert await stored_events(engine) == []


# 5. Header cost.


@pytest.mark.processes
async def test_a_cookie_full_of_backslashes_is_cheap(
    http_server: Callable[..., str], client: httpx2.AsyncClient
) -> None:
    base = http_server()
    for size, statuses in ((20_000, (401,)), (64_000, (400, 431, None))):  # under, then over the header limit
        cookie = "a=" + '"' + "\\" * size + '"'
        started = time.monotonic()
        try:
            status: int | None = (await client.get(f"{base}/api/runs", headers={"Cookie": cookie})).status_code
        except httpx2.TransportError:  # refused and closed while the headers were still arriving
            status = None
        assert time.monotonic() - started < 1.0, size
        assert status in statuses, (size, status)
    assert (await client.get(f"{base}/healthz")).status_code == 200


# 6. One JSON error mapping.


@pytest.mark.processes
async def test_errors_are_json_with_the_field_named(
    http_server: Callable[..., str], client: httpx2.AsyncClient, private_state_dir: Path
) -> None:
    base = http_server()
    bearer = {"Authorization": f"Bearer {http_token(private_state_dir)}"}
    response = await client.get(f"{base}/api/runs/nope", headers=bearer)
    assert response.status_code == 404 and response.json()["error"] == "run_not_found"
    response = await client.post(f"{base}/events", content=b"[" * 100_000, headers={**bearer, **JSON})
    assert response.status_code == 400 and response.json()["error"] in ("invalid_json", "invalid_input"), response.text
    response = await client.get(f"{base}/api/events?cursor=" + "9" * 40, headers=bearer)
    assert response.status_code in (400, 500) and response.headers["content-type"] == "application/json"
    assert response.json()["error"] in ("invalid_input", "internal_error") and response.json()["message"]


async def test_an_unforeseen_failure_is_a_json_500_that_names_the_request(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(query: Any) -> Any:  # stands for a bug anywhere below a route
        raise RuntimeError("a bug")

    monkeypatch.setattr(engine.runs, "list_runs", broken)
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    token = "t" * 32
    app = build_app(Settings.load({}, db=str(tmp_path / "unused.db")), engine, token, host="127.0.0.1", port=port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        while not server.started:
            assert not serving.done(), "the server did not start"
            await asyncio.sleep(0.01)
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as client:
            answer = await client.get(f"http://127.0.0.1:{port}/api/runs")
            healthy = await client.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        server.should_exit = True
        await serving
    assert answer.status_code == 500 and answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "error": "internal_error",
        "message": "the server failed on GET /api/runs (RuntimeError); see its log",
    }
    assert healthy.status_code == 200  # one failed request leaves the server serving
