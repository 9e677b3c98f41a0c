"""An eval attempt whose agent's LLM calls one `tether serve` serves while its finish lands on
another (two workers or replicas on one database): the check waits for the other process's
span batch, so its verdict sees every call (SQLite file and PostgreSQL), whether the calls took
a budget hold in the database, took none (no cap at all), or took it in Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL, ServerProcess
from tests.e2e.mock_upstream import mock_provider
from tether.demo.server import ThreadedServer, free_port
from tether.gateway.llm.mock import create_mock_app
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade

CALLS = 3
ATTEMPTS = 4
# a run cap: each call's budget hold is committed before the gateway answers
POLICY = """\
agent: support
budgets:
  run: {max_llm_calls: 50}
"""
# no cap at all: nothing is held, in the database or in Redis
UNCAPPED = "agent: support\n"
MODES = {
    "sql-ledger": (POLICY, False),
    "no-cap": (UNCAPPED, False),
    "redis-ledger": (POLICY, True),
}
SUITE = f"""\
suite: two-servers
agent: support
repeats: {ATTEMPTS}
tasks:
  - id: t1
    input: plan
    assert:
      - {{name: at most two calls, max_llm_calls: 2}}
      - {{name: clean, no_budget_refusal: true}}
"""


@pytest.fixture
def servers(
    tmp_path: Path, db_url: str, request: pytest.FixtureRequest
) -> Iterator[tuple[ServerProcess, ServerProcess, str, str]]:
    # the Redis ledger where a test asks for it (indirect `servers` parameter)
    env = {"TETHER_REDIS_URL": REDIS_URL} if getattr(request, "param", False) else None
    mock = ThreadedServer(create_mock_app(None), "127.0.0.1", free_port())
    config = tmp_path / "tether.yaml"
    pricing = {"mock-small": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}
    config.write_text(json.dumps({"providers": [mock_provider(mock)], "pricing": pricing}))
    engine = make_engine(db_url)
    upgrade(engine)
    _, admin = create_key(engine, scopes="admin", name="admin")
    _, agent_key = create_key(engine, scopes="agent,ingest", agent="support", name="support")
    engine.dispose()
    a = ServerProcess(tmp_path / "a", db_url, extra_env=env, config=config)
    try:
        b = ServerProcess(tmp_path / "b", db_url, extra_env=env, config=config)
    except BaseException:
        a.stop()
        raise
    yield a, b, admin, agent_key
    b.stop()
    a.stop()
    mock.stop()


@pytest.mark.parametrize(
    ("servers", "policy"),
    [(redis, policy) for policy, redis in MODES.values()],
    ids=list(MODES),
    indirect=["servers"],
)
def test_a_finish_on_another_server_sees_every_call(
    servers: tuple[ServerProcess, ServerProcess, str, str], policy: str
) -> None:
    a, b, admin, agent_key = servers
    auth = {"Authorization": f"Bearer {admin}"}
    with (
        httpx.Client(base_url=b.url + "/api/v1", headers=auth, timeout=30) as api,
        httpx.Client(base_url=a.url + "/llm/v1", timeout=30) as llm,
    ):
        assert api.post("/policies", json={"source": policy}).status_code == 201
        ev = api.post("/evals", json={"source": SUITE, "version": "v1"})
        assert ev.status_code == 201, ev.text
        eval_id = ev.json()["id"]
        for attempt in range(ATTEMPTS):
            start = api.post(
                f"/evals/{eval_id}/attempts", json={"task_id": "t1", "attempt": attempt}
            )
            assert start.status_code in (200, 201), start.text
            run_id = start.json()["run_id"]
            headers = {"Authorization": f"Bearer {agent_key}", "X-Tether-Run-Id": run_id}
            for i in range(CALLS):  # served by A, whose writer stores the spans in a batch
                res = llm.post("/chat/completions", headers=headers, json={
                    "model": "mock-small", "messages": [{"role": "user", "content": f"step {i}"}],
                })  # fmt: skip
                assert res.status_code == 200, res.text
            # the finish at once on B, which has none of those spans queued
            done = api.post(
                f"/evals/{eval_id}/attempts/t1/{attempt}/finish",
                json={"ok": True, "output": "done", "run_id": run_id},
            )
            assert done.status_code == 200, done.text
            out = done.json()
            results = {r["name"]: r for r in out["results"]}
            # three calls were made: "at most two" fails, whatever process served them
            assert results["at most two calls"]["passed"] is False, results
            assert results["clean"]["passed"] is True
            assert out.get("missing_spans", 0) == 0
            run = api.get(f"/runs/{run_id}").json()
            assert run["llm_calls"] == CALLS
            assert out["cost_usd"] == pytest.approx(run["cost_usd"]) and run["cost_usd"] > 0


def test_a_refusal_on_another_server_fails_the_check(
    servers: tuple[ServerProcess, ServerProcess, str, str],
) -> None:
    """A refused call has no budget hold: the gateway stores its span before it answers."""
    a, b, admin, agent_key = servers
    auth = {"Authorization": f"Bearer {admin}"}
    poor = POLICY.replace("max_llm_calls: 50", "max_cost_usd: 0.000001")
    with (
        httpx.Client(base_url=b.url + "/api/v1", headers=auth, timeout=30) as api,
        httpx.Client(base_url=a.url + "/llm/v1", timeout=30) as llm,
    ):
        assert api.post("/policies", json={"source": poor}).status_code == 201
        ev = api.post("/evals", json={"source": SUITE, "version": "v1"})
        eval_id = ev.json()["id"]
        start = api.post(f"/evals/{eval_id}/attempts", json={"task_id": "t1", "attempt": 0})
        run_id = start.json()["run_id"]
        headers = {"Authorization": f"Bearer {agent_key}", "X-Tether-Run-Id": run_id}
        res = llm.post("/chat/completions", headers=headers, json={
            "model": "mock-small", "messages": [{"role": "user", "content": "plan"}],
        })  # fmt: skip
        assert res.status_code == 402, res.text
        done = api.post(
            f"/evals/{eval_id}/attempts/t1/0/finish",
            json={"ok": True, "output": "done", "run_id": run_id},
        )
        assert done.status_code == 200, done.text
        results = {r["name"]: r for r in done.json()["results"]}
        assert results["clean"]["passed"] is False, results
        assert "1 budget refusal" in results["clean"]["reason"]
