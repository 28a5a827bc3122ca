"""The HTTP server's door: bearer token, POST /events, HMAC and GitHub-signed webhooks, over real HTTP."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from .support import cli, http_token, stdio_server

pytestmark = [pytest.mark.anyio, pytest.mark.processes]

SECRET = "a-webhook-secret-of-some-length"


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def stored_events(db: str) -> list[dict[str, Any]]:
    return json.loads(cli(db, "events", "--json", "--limit", "200").stdout)["events"]


async def test_every_route_but_health_needs_the_token(
    http_server: Callable[..., str], private_state_dir: Path, db: str
) -> None:
    base = http_server()
    token = http_token(private_state_dir)
    assert (private_state_dir / "token").stat().st_mode & 0o777 == 0o600
    assert cli(db, "token").stdout.strip() == token

    with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
        assert response.status == 200
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": token}):
        status, answer = post(f"{base}/events", b'{"name": "x"}', headers)
        assert status == 401 and "bearer token" in answer["message"], headers
        status, answer = post(f"{base}/mcp", b"{}", headers)
        assert status == 401
    assert stored_events(db) == []


async def test_events_wake_runs_and_are_stored_once(
    http_server: Callable[..., str], private_state_dir: Path, db: str
) -> None:
    base = http_server()
    auth = {"Authorization": f"Bearer {http_token(private_state_dir)}"}
    async with Client(stdio_server(db)) as client:
        run_id = (await client.call_tool("start_run", {"name": "deploy"})).structured_content["run"]["run_id"]
        waiting = await client.call_tool(
            "wait_for_event", {"run_id": run_id, "step": "ci", "event": "ci.done", "block_s": 0}
        )
        assert waiting.structured_content["status"] == "waiting"

        status, answer = post(
            f"{base}/events", json.dumps({"name": "ci.done", "data": {"ok": True}, "id": "b-1"}).encode(), auth
        )
        assert status == 200 and answer["woken_run_ids"] == [run_id] and answer["deduplicated"] is False
        status, again = post(f"{base}/events", json.dumps({"name": "ci.done", "id": "b-1"}).encode(), auth)
        assert status == 200 and again["deduplicated"] is True

        received = await client.call_tool("wait_for_event", {"run_id": run_id, "step": "ci", "event": "ci.done"})
        assert received.structured_content["event"]["source"] == "webhook"

    batch = [{"name": "a", "data": 1}, {"name": "b", "data": 2}]
    status, answer = post(f"{base}/events", json.dumps(batch).encode(), auth)
    assert status == 200 and len(answer) == 2
    assert [e["name"] for e in stored_events(db)] == ["b", "a", "ci.done"]

    for body, code in [
        (b"{not json", "invalid_json"),
        (json.dumps([{"name": "ok"}, {"name": "has space"}]).encode(), "invalid_input"),
        (json.dumps({"data": 1}).encode(), "invalid_input"),
    ]:
        status, answer = post(f"{base}/events", body, auth)
        assert status in (400, 422) and answer["error"] == code, body
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", "/events")
    connection.putheader("Authorization", auth["Authorization"])
    connection.putheader("Content-Length", str(5 * 1024 * 1024))  # refused on the header, before the body
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and json.load(response)["error"] == "too_large"
    connection.close()
    assert len(stored_events(db)) == 3, "a rejected request stores nothing"


async def test_signed_webhooks_are_verified(http_server: Callable[..., str], db: str) -> None:
    base = http_server(MCP_ORCHESTRATOR_WEBHOOK_SECRET=SECRET)

    body = json.dumps({"name": "deploy.done", "data": {"env": "prod"}}).encode()
    status, answer = post(f"{base}/events", body, {"X-Signature-256": sign(body)})
    assert status == 200 and answer["deduplicated"] is False

    github = json.dumps({"action": "opened", "number": 42}).encode()
    headers = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "d-42", "X-Hub-Signature-256": sign(github)}
    status, answer = post(f"{base}/events", github, headers)
    assert status == 200 and answer["event_id"] == "d-42"
    newest = stored_events(db)[0]
    assert (newest["name"], newest["data"]["number"], newest["source"]) == ("github.pull_request", 42, "webhook")

    for bad in (sign(github, "another-secret-entirely"), "sha256=00", "nonsense"):
        status, answer = post(
            f"{base}/events", github, {**headers, "X-Hub-Signature-256": bad, "X-GitHub-Delivery": "d-43"}
        )
        assert status == 401 and answer["error"] == "bad_signature", bad
    tampered = github.replace(b"42", b"43")
    status, _ = post(f"{base}/events", tampered, {**headers, "X-GitHub-Delivery": "d-44"})
    assert status == 401
    assert [e["event_id"] for e in stored_events(db)][:1] == ["d-42"] and len(stored_events(db)) == 2


async def test_signatures_need_a_configured_secret(http_server: Callable[..., str], db: str) -> None:
    base = http_server()
    body = json.dumps({"name": "x"}).encode()
    status, answer = post(f"{base}/events", body, {"X-Signature-256": sign(body)})
    assert status == 401 and "MCP_ORCHESTRATOR_WEBHOOK_SECRET" in answer["message"]
    assert stored_events(db) == []
