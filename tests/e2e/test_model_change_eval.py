"""A model change point re-runs the agent's eval suite, end to end: `tether serve` with the
mock LLM behind its LLM gateway and `watch.eval_on_model_change` naming the support agent's
command adapter. The agent was served a dated model for two days; an eval then runs it on
the mock's model; the watch pass finds the change point, and the server runs the suite again
through `tether eval run` and records the eval on the alert."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.e2e.test_evals_e2e import AGENT, ROOT
from tether.demo.server import ThreadedServer, free_port
from tether.demo.watch_traffic import SUPPORT_V1, run_spans
from tether.gateway.llm.mock import create_mock_app
from tether.gateway.llm.mock_script import parse_script
from tether.gateway.mcp.demo import demo_policy
from tether.store.engine import make_engine
from tether.store.ingest import write_spans
from tether.store.keys import create_key
from tether.store.migrate import upgrade

SUITE = """\
suite: support-model
agent: support
target_cost_usd: 1.00
repeats: 1
tasks:
  - id: ada
    input: {email: ada@example.com}
    assert:
      - {name: looked up, tool_called: demo.lookup_customer}
      - {name: answered, output_contains: "Dear customer"}
"""
OLD_MODEL = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerProcess, httpx.Client, str, str, str]]:
    mock = ThreadedServer(create_mock_app(parse_script({"replies": []})), "127.0.0.1",
                          free_port())  # fmt: skip
    config = tmp_path / "tether.yaml"
    config.write_text(json.dumps({
        "providers": [{"name": "mock", "kind": "openai", "models": ["mock-small"],
                       "base_url": f"http://127.0.0.1:{mock.server.config.port}/v1"}],
        "pricing": {"mock-small": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}},
        "mcp_servers": [{"name": "demo",
                         "command": [sys.executable, "-m", "tether.gateway.mcp.demo_server"]}],
        "watch": {"enabled": False,
                  "eval_on_model_change": {"support": {"agent": f"{AGENT} good"}}},
    }))  # fmt: skip
    db_url = f"sqlite:///{tmp_path / 'tether.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    _, admin = create_key(engine, scopes="admin", name="admin")
    _, agent_key = create_key(engine, scopes="agent,ingest", agent="support", name="support")
    # two days of the support agent on a dated model, as its OTLP traces recorded them
    rng = random.Random(3)
    dated = replace(SUPPORT_V1, model=OLD_MODEL)
    now = datetime.now(UTC)
    history = [s for i in range(40) for s in run_spans(
        rng, now - timedelta(days=2) + timedelta(hours=i), agent="support", version="v1",
        user="u", behaviour=dated)]  # fmt: skip
    write_spans(engine, history, now=now, source="otlp")
    engine.dispose()
    proc = ServerProcess(tmp_path / "home", db_url, config=config,
                         extra_env={"PYTHONPATH": str(ROOT)})  # fmt: skip
    api = httpx.Client(base_url=proc.url + "/api/v1", timeout=60,
                       headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
    try:
        assert api.post("/policies", json={"source": demo_policy("support")}).status_code == 201
        (tmp_path / "suite.yaml").write_text(SUITE)
        yield proc, api, admin, agent_key, str(tmp_path)
    finally:
        api.close()
        proc.stop()
        mock.stop()


def _eval_by_hand(proc: ServerProcess, admin: str, agent_key: str, cwd: str) -> dict[str, Any]:
    env = {**os.environ, "TETHER_URL": proc.url, "TETHER_API_KEY": admin,
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    env.pop("TETHER_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "tether.cli.main", "eval", "run", "suite.yaml", "--agent",
         f"{AGENT} good", "--version", "v1", "--agent-key", agent_key, "--json"],
        env=env, capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def test_a_model_change_re_runs_the_agents_eval_suite(
    served: tuple[ServerProcess, httpx.Client, str, str, str],
) -> None:
    proc, api, admin, agent_key, cwd = served
    first = _eval_by_hand(
        proc, admin, agent_key, cwd
    )  # served by the mock's own model, not the dated one
    assert first["success"]["successes"] == 1, json.dumps(first["attempts"])[:2000]
    r = api.post("/watch/evaluate")
    assert r.status_code == 200, r.text
    changes = [a for a in r.json()["raised"] if a["kind"] == "model_change"]
    assert changes, r.json()
    alert = changes[0]
    assert alert["detail"]["change"]["previous"] == OLD_MODEL
    assert alert["detail"]["eval"]["status"] == "queued"
    assert alert["detail"]["eval"]["from_eval"] == first["id"]
    deadline = time.monotonic() + 240
    while True:
        got = api.get(f"/alerts/{alert['id']}").json()
        plan = got["detail"]["eval"]
        if plan["status"] in ("finished", "errored") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert plan["status"] == "finished", plan
    assert plan["eval_id"] != first["id"] and plan["version"] == "v1"
    assert (plan["successes"], plan["total"]) == (1, 1)
    again = api.get(f"/evals/{plan['eval_id']}").json()
    assert again["suite"] == "support-model" and again["agent"] == "support"
    # its attempt was a real run through the gateways, under a key that is gone now
    [attempt] = again["attempts"]
    run = api.get(f"/runs/{attempt['run_id']}").json()
    assert run["llm_calls"] == 1 and run["tool_calls"] == 1
    live = api.get("/keys").json()["items"]
    assert not [k for k in live if k["name"].startswith("model-change eval")]
    every = api.get("/keys", params={"include_revoked": "true"}).json()["items"]
    minted = [k for k in every if k["name"].startswith("model-change eval")]
    assert len(minted) == 1 and minted[0]["revoked_at"] and minted[0]["agent"] == "support"
