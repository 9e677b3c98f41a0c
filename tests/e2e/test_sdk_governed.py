"""The SDK with tether's enforcement, end to end against `tether serve` (SQLite): a guarded tool
held for approval and then approved, a denied one, and OpenAI calls through the LLM gateway
(mock LLM upstream) landing in the SDK's run."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import tether
from tests.conftest import ServerProcess
from tether.demo.server import ThreadedServer, free_port
from tether.gateway.llm.mock import create_mock_app
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade

POLICY = """\
agent: support
models: [mock-small]
tools:
  - {match: "crm.*", allow: true}
  - {match: "mail.send", approval: required}
  - {match: "billing.delete_*", allow: false, reason: "deleting billing data is never automated"}
"""

sent: list[str] = []


@tether.tool(name="mail.send", tags=["egress"], irreversible=True, approval_timeout_s=20)
def send_email(to: str, subject: str) -> str:
    sent.append(to)
    return f"sent {subject!r} to {to}"


@tether.tool(name="billing.delete_invoice", irreversible=True)
def delete_invoice(invoice: str) -> None:
    sent.append(invoice)


@pytest.fixture
def governed(tmp_path: Path) -> Iterator[tuple[ServerProcess, httpx.Client, str]]:
    mock = ThreadedServer(create_mock_app(), "127.0.0.1", free_port())
    config = tmp_path / "tether.yaml"
    config.write_text(json.dumps({"providers": [{
        "name": "mock", "kind": "openai", "models": ["mock-small"],
        "base_url": f"http://127.0.0.1:{mock.server.config.port}/v1"}]}))  # fmt: skip
    db_url = f"sqlite:///{tmp_path / 'tether.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    _, admin = create_key(engine, scopes="admin", name="admin")
    _, agent_key = create_key(engine, scopes="agent,ingest", agent="support", name="support")
    engine.dispose()
    proc = ServerProcess(tmp_path / "home", db_url, config=config)
    api = httpx.Client(base_url=proc.url + "/api/v1", timeout=10,
                       headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
    assert api.post("/policies", json={"source": POLICY}).status_code == 201
    tether.shutdown()
    tether.init(proc.url, api_key=agent_key, schedule_delay_ms=50)
    sent.clear()
    yield proc, api, agent_key
    tether.shutdown()
    api.close()
    proc.stop()
    mock.stop()


def _pending(api: httpx.Client, run_id: str) -> dict[str, Any] | None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        items = api.get("/approvals", params={"status": "pending"}).json()["items"]
        found = next((a for a in items if a["run_id"] == run_id), None)
        if found:
            return found
        time.sleep(0.05)
    return None


@pytest.mark.slow
def test_guarded_tools_and_gateway_calls_in_one_run(
    governed: tuple[ServerProcess, httpx.Client, str],
) -> None:
    proc, api, agent_key = governed
    result: dict[str, Any] = {}

    def agent() -> None:
        with tether.run(agent="support", task_id="S-1", user="dana") as run:
            result["run"] = run
            with pytest.raises(tether.ToolDeniedError) as denied:
                delete_invoice("INV-1")
            result["denied"] = denied.value
            tether.flush()
            result["sent"] = send_email("cfo@acme.example", "Q3 invoice")
            client = tether.instrument_openai(openai.OpenAI(
                base_url=proc.url + "/llm/v1", api_key=agent_key, max_retries=0))  # fmt: skip
            reply = client.chat.completions.create(
                model="mock-small", messages=[{"role": "user", "content": "say hi"}])  # fmt: skip
            run.set_output(reply.choices[0].message.content)

    thread = threading.Thread(target=agent)
    thread.start()
    deadline = time.monotonic() + 10
    while "run" not in result and time.monotonic() < deadline:
        time.sleep(0.01)
    held = _pending(api, result["run"].id)
    assert held is not None, "the email was not held for approval"
    assert (held["tool"], held["arguments"]) == (
        "mail.send", {"to": "cfo@acme.example", "subject": "Q3 invoice"})  # fmt: skip
    assert sent == []  # nothing happens before a person decides
    assert api.get(f"/runs/{held['run_id']}").json()["status"] == "awaiting_approval"
    assert api.post(f"/approvals/{held['id']}/approve", json={"reason": "ok"}).status_code == 200
    thread.join(20)
    assert result["sent"] == "sent 'Q3 invoice' to cfo@acme.example"
    assert sent == ["cfo@acme.example"]
    denied = result["denied"]
    assert (denied.decision, denied.tool) == ("deny", "billing.delete_invoice")
    assert "never automated" in str(denied)

    run_id = result["run"].id
    assert tether.flush()

    def detail() -> dict[str, Any]:
        return dict(api.get(f"/runs/{run_id}").json())

    deadline = time.monotonic() + 10
    run = detail()
    while (run["llm_calls"] < 1 or run["status"] != "succeeded") and time.monotonic() < deadline:
        time.sleep(0.1)
        run = detail()
    assert run["status"] == "succeeded"
    assert (run["agent"], run["task_id"], run["user"]) == ("support", "S-1", "dana")
    assert run["llm_calls"] == 1  # recorded once, by the gateway (the SDK saw its base_url)
    assert run["cost_usd"] > 0
    spans = api.get(f"/runs/{run_id}/spans").json()["items"]
    kinds = sorted(s["kind"] for s in spans)
    assert kinds == ["agent", "llm", "tool", "tool"]
    mail = next(s for s in spans if s["name"] == "mail.send")
    assert mail["status"] == "ok"
    assert mail["attributes"].get("tether.decision") == "approval_required"
