"""The SDK against a real `tether serve` (SQLite and PostgreSQL): the REST API returns exactly
what the agent sent — runs, span tree, tool input/output, costs, feedback and scores."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

import tether
from tests.conftest import ServerProcess


@tether.tool(name="crm.lookup", tags=["read"])
def lookup(email: str) -> dict[str, Any]:
    return {"email": email, "plan": "pro"}


@tether.tool(name="billing.refund")
def refund(invoice: str) -> str:
    raise PermissionError(f"invoice {invoice} is locked")


@pytest.fixture
def tether_server(
    tmp_path: Path, db: Engine, db_url: str, admin_secret: str
) -> Iterator[tuple[ServerProcess, httpx.Client]]:
    proc = ServerProcess(tmp_path / "home", db_url)
    tether.shutdown()
    tether.init(proc.url, api_key=admin_secret, schedule_delay_ms=50)
    api = httpx.Client(
        base_url=proc.url + "/api/v1",
        timeout=10,
        headers={"Authorization": f"Bearer {admin_secret}"},
    )
    yield proc, api
    tether.shutdown()
    api.close()
    proc.stop()


def _poll(fetch: Any, done: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_sdk_runs_land_in_tether_exactly(tether_server: tuple[ServerProcess, httpx.Client]) -> None:
    _, api = tether_server
    with tether.run(
        agent="triage",
        task_id="T-1",
        user="alice",
        version="v2",
        input={"ticket": "refund my invoice"},
    ) as ok:
        assert lookup("alice@example.com")["plan"] == "pro"
        tether.record_llm(
            model="gpt-4o-mini",
            input="classify",
            output="billing",
            input_tokens=1000,
            output_tokens=200,
            latency_ms=420,
        )
        ok.set_output("routed to billing")
    ok.feedback(thumbs=1, comment="quick")
    ok.score("accuracy", 0.9)
    with (
        pytest.raises(PermissionError),
        tether.run(agent="triage", task_id="T-2", user="bob", version="v2") as bad,
    ):
        refund("INV-7")
    assert tether.flush()
    assert tether.sdk_stats()["dropped"] == 0

    run = api.get(f"/runs/{ok.id}").json()
    assert (run["id"], run["agent"], run["task_id"], run["user"], run["version"]) == (
        ok.id,
        "triage",
        "T-1",
        "alice",
        "v2",
    )
    assert run["status"] == "succeeded"
    assert json.loads(run["input"]) == {"ticket": "refund my invoice"}
    assert run["output"] == "routed to billing"
    assert (run["llm_calls"], run["tool_calls"]) == (1, 1)
    assert (run["input_tokens"], run["output_tokens"]) == (1000, 200)
    assert run["cost_usd"] == pytest.approx(1000 * 1.5e-7 + 200 * 6e-7)

    (root,) = run["spans"]
    assert root["kind"] == "agent" and root["name"] == "triage" and root["parent_id"] is None
    kids = {c["name"]: c for c in root["children"]}
    assert set(kids) == {"crm.lookup", "chat gpt-4o-mini"}
    tool = kids["crm.lookup"]
    assert tool["kind"] == "tool" and tool["status"] == "ok"
    assert json.loads(tool["input"]) == {"email": "alice@example.com"}
    assert json.loads(tool["output"]) == {"email": "alice@example.com", "plan": "pro"}
    llm = kids["chat gpt-4o-mini"]
    assert (llm["kind"], llm["model"], llm["input_tokens"], llm["output_tokens"]) == (
        "llm",
        "gpt-4o-mini",
        1000,
        200,
    )
    assert llm["latency_ms"] == pytest.approx(420, abs=1)
    assert llm["cost_usd"] == pytest.approx(run["cost_usd"])

    failed = api.get(f"/runs/{bad.id}").json()
    assert failed["status"] == "failed"
    assert "PermissionError: invoice INV-7 is locked" in failed["error"]
    (tool_span,) = failed["spans"][0]["children"]
    assert tool_span["status"] == "error"
    assert tool_span["error"] == "PermissionError: invoice INV-7 is locked"

    fb = _poll(
        lambda: api.get(f"/runs/{ok.id}/feedback").json(), lambda b: b["feedback"] and b["scores"]
    )
    assert [(f["kind"], f["value"], f["comment"], f["user"]) for f in fb["feedback"]] == [
        ("thumbs", 1, "quick", "alice")
    ]
    assert [(s["name"], s["value"], s["source"]) for s in fb["scores"]] == [
        ("accuracy", 0.9, "sdk")
    ]
    listed = api.get("/runs", params={"agent": "triage"}).json()["items"]
    assert {r["id"] for r in listed} == {ok.id, bad.id}
    _concurrent_async_runs(tether_server)


def _concurrent_async_runs(
    tether_server: tuple[ServerProcess, httpx.Client],
) -> None:
    """Concurrent async runs keep their own spans apart."""
    _, api = tether_server

    async def agent(i: int) -> str:
        async with tether.run(agent="research", task_id=f"R-{i}", user="carol") as run:
            tether.record_llm(
                model="gpt-4o", input=f"q{i}", output=f"a{i}", input_tokens=10, output_tokens=5
            )
            run.set_output(f"a{i}")
            return run.id

    async def main() -> list[str]:
        return list(await asyncio.gather(*(agent(i) for i in range(5))))

    ids = asyncio.run(main())
    assert tether.flush()
    for i, run_id in enumerate(ids):
        run = api.get(f"/runs/{run_id}").json()
        assert (run["task_id"], run["output"], run["llm_calls"]) == (f"R-{i}", f"a{i}", 1)
        assert run["spans"][0]["children"][0]["input"] == f"q{i}"
