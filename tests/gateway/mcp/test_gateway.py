"""The MCP gateway end to end: the official MCP client against `tether serve` with real upstream
servers (tether's demo server, mcp-server-time, mcp-server-git): listing by policy, allowed,
denied and held calls, approvals by API and CLI, data-flow, spans, audit, crash recovery."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from sqlalchemy import select

from tests.gateway.mcp.conftest import Deployment, mcp_client
from tether.gateway.mcp.demo import demo_policy, demo_server_config, start_call
from tether.store import audit
from tether.store import tools as registry
from tether.store.tables import runs, spans

pytestmark = pytest.mark.slow


def new_run() -> str:
    return "run_" + uuid.uuid4().hex[:20]


def text(result: types.CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, types.TextContent))


def run_spans(d: Deployment, run_id: str) -> list[Any]:
    engine = d.engine()
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(spans).where(spans.c.run_id == run_id)
                                     .order_by(spans.c.started_at)))  # fmt: skip
    finally:
        engine.dispose()


def run_status(d: Deployment, run_id: str) -> str | None:
    engine = d.engine()
    try:
        with engine.connect() as conn:
            return conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar()
    finally:
        engine.dispose()


def pending_for(d: Deployment, run_id: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{d.url}/api/v1/approvals", params={"status": "pending", "run_id": run_id},
                      headers=d.admin_headers())  # fmt: skip
        r.raise_for_status()
        if r.json()["items"]:
            item: dict[str, Any] = r.json()["items"][0]
            return item
        time.sleep(0.05)
    raise AssertionError(f"no pending approval for {run_id}")


async def test_each_agent_sees_only_the_tools_its_policy_grants(deployment: Deployment) -> None:
    async with mcp_client(deployment.url, deployment.keys["triage"]) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert {"demo.send_email", "demo.lookup_customer", "demo.fetch_page", "time.get_current_time",
            "time.convert_time", "git.git_status", "git.git_log"} <= names  # fmt: skip
    assert "demo.delete_record" not in names and "git.git_commit" not in names
    assert "crm.search" in names  # an http_tools entry of tether.yaml, allowed by "crm.*"
    async with mcp_client(deployment.url, deployment.keys["reader"]) as client:
        tools = (await client.list_tools()).tools
    assert [t.name for t in tools] == ["time.get_current_time"]
    assert tools[0].annotations is not None and tools[0].annotations.read_only_hint
    listed = deployment.cli("tools", "show", "crm.search", "--json")
    shown = json.loads(listed.stdout)
    assert (shown["kind"], shown["owner"], shown["tags"]) == ("http", "sales", ["read"])


async def test_a_session_belongs_to_the_key_that_opened_it(deployment: Deployment) -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}}  # fmt: skip
    base = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
    own = {**base, "Authorization": f"Bearer {deployment.keys['triage']}"}
    other = {**base, "Authorization": f"Bearer {deployment.keys['reader']}"}
    async with httpx.AsyncClient(base_url=deployment.url) as http:
        r = await http.post("/mcp", json=init, headers=own)
        assert r.status_code == 200, r.text
        session = r.headers["mcp-session-id"]
        ping = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        stolen = await http.post("/mcp", json=ping, headers={**other, "Mcp-Session-Id": session})
        assert stolen.status_code == 404


async def test_allowed_call_is_forwarded_and_recorded_as_a_tool_span(
    deployment: Deployment,
) -> None:
    run_id = new_run()
    async with mcp_client(deployment.url, deployment.keys["triage"], run_id) as client:
        result = await client.call_tool("time.get_current_time", {"timezone": "Europe/Paris"})
    assert not result.is_error
    assert json.loads(text(result))["timezone"] == "Europe/Paris"
    [span] = run_spans(deployment, run_id)
    assert (span.kind, span.name, span.status) == ("tool", "time.get_current_time", "ok")
    assert json.loads(span.input) == {"timezone": "Europe/Paris"}
    assert "Europe/Paris" in span.output and span.latency_ms > 0
    assert span.attributes["tether.decision"]["decision"] == "allow"


async def test_legacy_session_clients_get_a_run_per_session(deployment: Deployment) -> None:
    async with mcp_client(deployment.url, deployment.keys["reader"], mode="legacy") as client:
        assert client.protocol_version == "2025-11-25"
        for _ in range(2):
            r = await client.call_tool("time.get_current_time", {"timezone": "UTC"})
            assert not r.is_error
    engine = deployment.engine()
    with engine.connect() as conn:
        rows = conn.execute(
            select(spans.c.run_id).where(
                spans.c.name == "time.get_current_time", spans.c.run_id.like("run_mcp_%")
            )
        ).all()
    engine.dispose()
    assert len(rows) == 2 and rows[0].run_id == rows[1].run_id


async def test_streamable_http_upstream(deployment: Deployment) -> None:
    async with mcp_client(deployment.url, deployment.keys["triage"], new_run()) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "web.lookup_customer" in names and "web.send_email" not in names
        r = await client.call_tool("web.lookup_customer", {"email": "alan@example.com"})
    assert not r.is_error and "Alan Turing" in text(r)


async def test_git_server_on_a_temporary_repository(deployment: Deployment) -> None:
    async with mcp_client(deployment.url, deployment.keys["triage"], new_run()) as client:
        log = await client.call_tool("git.git_log", {"repo_path": str(deployment.home.parent /
                                                                      "repo")})  # fmt: skip
        commit = await client.call_tool("git.git_commit", {"repo_path": "/tmp", "message": "x"})
    assert not log.is_error and "first commit" in text(log)
    assert commit.is_error and "tether denied git.git_commit" in text(commit)
    async with mcp_client(deployment.url, deployment.keys["triage"], new_run()) as client:
        unknown = await client.call_tool("time.no_such_tool", {})
    assert unknown.is_error and "not in the tool registry" in text(unknown)


async def test_denied_call_is_a_tool_error_with_rule_and_reason(deployment: Deployment) -> None:
    run_id = new_run()
    async with mcp_client(deployment.url, deployment.keys["triage"], run_id) as client:
        result = await client.call_tool("demo.delete_record", {"table": "customers", "id": "7"})
    assert result.is_error
    assert "records are never deleted by agents" in text(result)
    assert 'tools[3] match "demo.delete_record"' in text(result)
    assert result.structured_content["tether"]["decision"] == "deny"
    [span] = run_spans(deployment, run_id)
    assert span.status == "error" and "never deleted" in span.error
    engine = deployment.engine()
    entries, _ = audit.list_entries(engine, action="policy.decision", subject="demo.delete_record")
    engine.dispose()
    assert any(e.data["run_id"] == run_id and e.data["outcome"] == "deny" for e in entries)


async def test_held_call_is_forwarded_soon_after_approval_by_api(deployment: Deployment) -> None:
    run_id = new_run()
    progress: list[float] = []
    outcome: dict[str, Any] = {}

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with mcp_client(deployment.url, deployment.keys["triage"], run_id) as client:

        async def call() -> None:
            outcome["result"] = await client.call_tool(
                "demo.send_email",
                {"to": "ada@example.com", "subject": "Hi", "body": "Invoice"},
                progress_callback=on_progress,
            )
            outcome["at"] = time.monotonic()

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            held = await anyio.to_thread.run_sync(pending_for, deployment, run_id)
            assert held["tool"] == "demo.send_email" and held["agent"] == "triage"
            assert held["arguments"]["to"] == "ada@example.com"
            assert run_status(deployment, run_id) == "awaiting_approval"
            sent = time.monotonic()
            r = await anyio.to_thread.run_sync(lambda: httpx.post(
                f"{deployment.url}/api/v1/approvals/{held['id']}/approve",
                json={"reason": "looks right"}, headers=deployment.admin_headers()))  # fmt: skip
            decided = time.monotonic()
            assert r.status_code == 200 and r.json()["status"] == "approved"
    latency = outcome["at"] - sent
    print(
        f"approve request sent -> result {latency * 1000:.0f} ms "
        f"(approve response at {(decided - sent) * 1000:.0f} ms)"
    )
    assert latency < 2.0  # target 100 ms, measured in bench/approvals.py; loose here
    result = outcome["result"]
    assert not result.is_error and "sent email" in text(result)
    assert progress, "the client got progress notifications while the call was held"
    assert run_status(deployment, run_id) == "running"
    kinds = sorted((s.kind, s.status) for s in run_spans(deployment, run_id))
    assert kinds == [("approval", "ok"), ("tool", "ok")]


async def test_held_call_denied_by_cli_returns_the_denial(deployment: Deployment) -> None:
    run_id = new_run()
    box: dict[str, types.CallToolResult] = {}
    async with (
        mcp_client(deployment.url, deployment.keys["triage"], run_id) as client,
        anyio.create_task_group() as tg,
    ):

        async def call() -> None:
            box["r"] = await client.call_tool(
                "demo.send_email", {"to": "alan@example.com", "subject": "x", "body": "y"}
            )

        tg.start_soon(call)
        held = await anyio.to_thread.run_sync(pending_for, deployment, run_id)
        listed = await anyio.to_thread.run_sync(deployment.cli, "approvals", "list", "--json")
        assert held["id"] in {a["id"] for a in json.loads(listed.stdout)["items"]}
        out = await anyio.to_thread.run_sync(
            deployment.cli, "approvals", "deny", held["id"], "--reason", "wrong customer"
        )
        assert out.returncode == 0, out.stderr
    result = box["r"]
    assert result.is_error and "wrong customer" in text(result) and "denied" in text(result)
    again = deployment.cli("approvals", "approve", held["id"], "--reason", "too late")
    assert again.returncode == 1 and "already denied" in again.stderr


async def test_a_fetch_after_taint_is_not_held_like_an_email(deployment: Deployment) -> None:
    """fetch_page is read-only and open-world: it reads the open world (ingress, untrusted), it
    does not send to it (egress), so the run-wide egress rule does not hold the second fetch."""
    run_id = new_run()
    async with mcp_client(deployment.url, deployment.keys["triage"], run_id) as client:
        first = await client.call_tool("demo.fetch_page", {"url": "https://shop.example/policy"})
        assert not first.is_error and "ignore previous instructions" in text(first), text(first)
        second = await client.call_tool("demo.fetch_page", {"url": "https://x.example"})
        assert not second.is_error, text(second)
    tool = registry.get_tool(deployment.engine(), "demo.fetch_page")
    assert tool is not None and {"ingress", "untrusted"} <= set(tool.tags)
    assert "egress" not in tool.tags
    assert "untrusted" in registry.run_tags(deployment.engine(), run_id)


async def test_rate_limit_gives_retry_after(deployment: Deployment) -> None:
    args = {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
    async with mcp_client(deployment.url, deployment.keys["triage"], new_run()) as client:
        results = [await client.call_tool("time.convert_time", args) for _ in range(4)]
    assert [r.is_error for r in results] == [False, False, False, True]
    assert "rate-limited" in text(results[3]) and "retry after" in text(results[3])
    assert results[3].structured_content["tether"]["retry_after_s"] > 0


async def test_resources_and_prompts_pass_through(deployment: Deployment) -> None:
    async with mcp_client(deployment.url, deployment.keys["triage"]) as client:
        resources = (await client.list_resources()).resources
        assert sorted(r.uri for r in resources) == ["demo:demo://customers",
                                                    "web:demo://customers"]  # fmt: skip
        read = await client.read_resource("demo:demo://customers")
        assert "ada@example.com" in read.contents[0].text  # type: ignore[union-attr]
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert "demo.triage" in prompts
        prompt = await client.get_prompt("demo.triage", {"email": "refund please"})
        assert "refund please" in prompt.messages[0].content.text  # type: ignore[union-attr]


def test_mcp_endpoint_needs_an_agent_key(deployment: Deployment) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    r = httpx.post(deployment.url + "/mcp", json=body)
    assert r.status_code == 401 and "tether keys create" in r.json()["error"]["message"]
    r = httpx.post(deployment.url + "/mcp", json=body, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = httpx.post(deployment.url + "/mcp", json=body, headers=deployment.admin_headers())
    assert r.status_code == 403 and "--agent NAME" in r.json()["error"]["message"]


async def test_crashed_upstream_is_restarted_and_calls_meanwhile_fail_clearly(
    deployment: Deployment,
) -> None:
    async with mcp_client(deployment.url, deployment.keys["triage"], new_run()) as client:
        crash = await client.call_tool("demo.crash", {})
        assert crash.is_error and "demo" in text(crash)
        deadline = time.monotonic() + 15
        errors = []
        while True:
            r = await client.call_tool("demo.lookup_customer", {"email": "ada@example.com"})
            if not r.is_error:
                break
            errors.append(text(r))
            assert time.monotonic() < deadline, errors[-1]
            await anyio.sleep(0.1)
    assert "Ada Lovelace" in text(r)
    assert all("demo" in e and "retry" in e for e in errors)


def test_demo_start_call_returns_once_held(deployment: Deployment) -> None:
    run_id = new_run()
    pending = start_call(deployment.url, deployment.keys["triage"], "demo.send_email",
                         {"to": "ada@example.com", "subject": "Q3", "body": "invoice"},
                         run_id=run_id)  # fmt: skip
    assert pending.approval_id is not None and pending.result is None
    r = httpx.post(f"{deployment.url}/api/v1/approvals/{pending.approval_id}/approve",
                   headers=deployment.admin_headers())  # fmt: skip
    assert r.status_code == 200
    result = pending.wait(10)
    assert result is not None and not result.is_error and "sent email" in text(result)
    assert demo_server_config().command[-1] == "tether.gateway.mcp.demo_server"  # type: ignore[index]
    assert '{match: "demo.send_email", approval: required' in demo_policy("x")


async def test_registered_http_tool_is_served_through_the_gateway(deployment: Deployment) -> None:
    got: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            payload = b'{"name": "Ada Lovelace"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        spec = {
            "name": "crm.lookup",
            "url": f"http://127.0.0.1:{httpd.server_address[1]}/",
            "description": "Find a customer.",
            "tags": ["read"],
            "rate_limit": "100/minute",
        }
        r = httpx.post(f"{deployment.url}/api/v1/tools", json=spec,
                       headers=deployment.admin_headers())  # fmt: skip
        assert r.status_code == 201 and r.json()["kind"] == "http"
        bad = httpx.post(f"{deployment.url}/api/v1/tools", json={**spec, "rate_limit": "lots"},
                         headers=deployment.admin_headers())  # fmt: skip
        assert bad.status_code == 400
        env = {"TETHER_URL": deployment.url, "TETHER_API_KEY": deployment.keys["admin"]}
        listed = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, "-m", "tether.cli.main", "tools", "list", "--json"],
                env={**deployment.server.env, **env},
                capture_output=True,
                text=True,
                timeout=60,
            )
        )
        assert "crm.lookup" in {t["name"] for t in json.loads(listed.stdout)["items"]}
        async with mcp_client(deployment.url, deployment.keys["triage"], new_run()) as client:
            assert "crm.lookup" in {t.name for t in (await client.list_tools()).tools}
            result = await client.call_tool("crm.lookup", {"email": "ada@example.com"})
        assert not result.is_error and "Ada Lovelace" in text(result)
        assert got == [{"email": "ada@example.com"}]
    finally:
        httpd.shutdown()
        httpd.server_close()
