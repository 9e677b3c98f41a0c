"""Evals end to end: `tether eval run` drives a command agent (and an HTTP endpoint and a
callable) against `tether serve` with the mock LLM behind the LLM gateway and the demo MCP
server behind the MCP gateway; assertions come from what the gateways recorded; gate, compare,
resume, JUnit; the judge's cost is kept apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.conftest import ServerProcess
from tests.e2e.eval_agent import behave
from tests.e2e.mock_upstream import mock_provider
from tether.demo.server import ThreadedServer, free_port
from tether.gateway.llm.mock import create_mock_app
from tether.gateway.llm.mock_script import parse_script
from tether.gateway.mcp.demo import demo_policy
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade

ROOT = Path(__file__).resolve().parents[2]
AGENT = f"{sys.executable} {ROOT / 'tests' / 'e2e' / 'eval_agent.py'}"
SUITE = """\
suite: support-e2e
agent: support
target_cost_usd: 1.00
repeats: 2
judge: {model: mock-small, repeats: 3}
tasks:
  - id: ada
    input: {email: ada@example.com}
    assert:
      - {name: looked up, tool_called: demo.lookup_customer, args: {email: ada@example.com}}
      - {name: never deletes, tool_not_called: demo.delete_record}
      - {name: clean, no_policy_denial: true}
      - {name: few calls, max_llm_calls: 2}
      - {name: cheap, max_cost_usd: 0.5}
      - {name: polite, judge: {rubric: "Is the answer polite?", threshold: 0.7}}
      - {name: names email, output_predicate: "tests.e2e.eval_checks:names_email"}
  - id: alan
    input: {email: alan@example.com}
    assert:
      - {name: looked up, tool_called: demo.lookup_customer}
      - {name: answered, output_contains: "Dear customer"}
"""


@dataclass
class Env:
    proc: ServerProcess
    api: httpx.Client
    admin: str
    agent_key: str
    tmp: Path

    def tether(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "TETHER_URL": self.proc.url,
            "TETHER_API_KEY": self.admin,
            "PYTHONPATH": str(ROOT),
            "EVAL_AGENT_KEY": self.agent_key,
        }
        return subprocess.run(
            [sys.executable, "-m", "tether.cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=self.tmp,
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("evals")
    script = parse_script(
        {"replies": [{"match": "TETHER-JUDGE", "text": '{"score": 0.9, "reason": "courteous"}'}]}
    )
    mock = ThreadedServer(create_mock_app(script), "127.0.0.1", free_port())
    config = tmp / "tether.yaml"
    config.write_text(
        json.dumps(
            {
                "providers": [mock_provider(mock)],
                "pricing": {
                    "mock-small": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
                },
                "mcp_servers": [
                    {
                        "name": "demo",
                        "command": [sys.executable, "-m", "tether.gateway.mcp.demo_server"],
                    }
                ],
            }
        )
    )
    db_url = f"sqlite:///{tmp / 'tether.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    _, admin = create_key(engine, scopes="admin", name="admin")
    _, agent_key = create_key(engine, scopes="agent,ingest", agent="support", name="support")
    engine.dispose()
    proc = ServerProcess(tmp / "home", db_url, config=config)
    api = httpx.Client(
        base_url=proc.url + "/api/v1", timeout=30, headers={"Authorization": f"Bearer {admin}"}
    )
    assert api.post("/policies", json={"source": demo_policy("support")}).status_code == 201
    (tmp / "suite.yaml").write_text(SUITE)
    yield Env(proc, api, admin, agent_key, tmp)
    api.close()
    proc.stop()
    mock.stop()


def _run(env: Env, variant: str, version: str, *extra: str) -> dict[str, Any]:
    res = env.tether(
        "eval",
        "run",
        "suite.yaml",
        "--agent",
        f"{AGENT} {variant}",
        "--version",
        version,
        "--concurrency",
        "3",
        "--agent-key",
        env.agent_key,
        "--json",
        *extra,
    )
    assert res.returncode == 0, res.stderr
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def test_eval_run_gate_compare_end_to_end(env: Env) -> None:
    good = _run(env, "good", "v2", "--junit", "v2.xml")
    assert good["status"] == "finished" and len(good["attempts"]) == 4
    failures = [
        (a["task_id"], r["name"], r["reason"])
        for a in good["attempts"]
        for r in a["results"]
        if not r["passed"]
    ]
    assert failures == [], json.dumps(good["attempts"], indent=1)[:3000]
    assert good["success"]["successes"] == 4 and good["success"]["low"] > 0.3
    ada = next(a for a in good["attempts"] if a["task_id"] == "ada")
    judged = next(r for r in ada["results"] if r["name"] == "polite")
    assert judged["details"]["votes"] == [True, True, True] and judged["details"]["agreement"] == 1
    assert good["judge_cost_usd"] > 0 and good["cost_usd"] > 0  # the two are kept apart
    run = env.api.get(f"/runs/{ada['run_id']}").json()
    assert (run["agent"], run["version"], run["task_id"], run["status"]) == (
        "support",
        "v2",
        "ada",
        "succeeded",
    )
    assert run["llm_calls"] == 1 and run["tool_calls"] == 1  # recorded by the gateways
    cases = ET.parse(env.tmp / "v2.xml").getroot().findall(".//testcase")
    assert len(cases) == 4 and not ET.parse(env.tmp / "v2.xml").getroot().findall(".//failure")

    bad = _run(env, "bad", "v3", "--junit", "v3.xml")
    reasons = {
        (a["task_id"], r["name"]): r["reason"]
        for a in bad["attempts"]
        for r in a["results"]
        if not r["passed"]
    }
    assert "demo.lookup_customer" in reasons[("ada", "looked up")]
    assert reasons[("ada", "clean")] == "1 policy denial(s) recorded"
    assert "was called 1 time(s)" in reasons[("ada", "never deletes")]
    assert bad["success"]["successes"] == 0
    assert ET.parse(env.tmp / "v3.xml").getroot().findall(".//failure")

    fail = env.tether(
        "eval",
        "gate",
        "suite.yaml",
        "--version",
        "v3",
        "--baseline",
        "v2",
        "--min-success",
        "0.5",
        "--max-cost-per-task",
        "0.50",
    )
    assert fail.returncode == 1, fail.stdout + fail.stderr
    assert "FAIL" in fail.stdout and "below 50%" in fail.stdout
    undecided = env.tether(
        "eval", "gate", "suite.yaml", "--version", "v2", "--min-success", "0.85", "--json"
    )
    assert undecided.returncode == 3
    verdict = json.loads(undecided.stdout)
    assert verdict["outcome"] == "inconclusive" and verdict["more_attempts"] > 0
    assert f"about {verdict['more_attempts']} more attempts" in verdict["reasons"][0]
    stored = env.api.get("/gates", params={"agent": "support"}).json()["items"]
    assert [v["outcome"] for v in stored] == ["inconclusive", "fail"]
    usage = env.tether("eval", "gate", "suite.yaml", "--version", "v2")
    assert usage.returncode == 2 and "--min-success" in usage.stderr

    cmp = env.tether("eval", "compare", good["id"], bad["id"], "--json")
    diff = json.loads(cmp.stdout)
    assert sorted(diff["regressions"]) == ["ada", "alan"]
    ada_diff = next(t for t in diff["tasks"] if t["task_id"] == "ada")
    assert ada_diff["path_changed"] and ada_diff["b_path"] == ["demo.delete_record"]
    assert "looked up" in ada_diff["newly_failing"]
    human = env.tether("eval", "compare", good["id"], bad["id"])
    assert "regressed" in human.stdout and "2 regressed, 0 improved" in human.stdout


def test_resume_runs_only_what_is_missing_and_bad_suites_name_the_line(env: Env) -> None:
    created = env.api.post("/evals", json={"source": SUITE, "version": "v2r"}).json()
    first = env.api.post(
        f"/evals/{created['id']}/attempts", json={"task_id": "alan", "attempt": 0}
    ).json()
    task = {"task_id": "alan", "input": {"email": "alan@example.com"}}
    out = behave(task, first["run_id"], env.proc.url, env.agent_key, "good")
    done = env.api.post(
        f"/evals/{created['id']}/attempts/alan/0/finish", json={"ok": True, "output": out}
    ).json()
    assert done["passed"] is True
    resumed = _run(env, "good", "ignored", "--resume", created["id"])
    assert len(resumed["attempts"]) == 4 and resumed["attempts_done"] == 4
    assert {
        a["run_id"] for a in resumed["attempts"] if a["task_id"] == "alan" and a["attempt"] == 0
    } == {first["run_id"]}

    (env.tmp / "broken.yaml").write_text(
        SUITE.replace("tool_called: demo.lookup_customer}", "tool_caled: demo.lookup_customer}")
    )
    res = env.tether("eval", "run", "broken.yaml", "--agent", AGENT, "--version", "v9")
    assert res.returncode == 2
    assert "broken.yaml:20: tasks[1].assert[0].tool_caled: unknown key" in res.stderr
    assert "did you mean `tool_called`?" in res.stderr


def test_http_endpoint_and_callable_adapters(env: Env) -> None:
    seen: list[str] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        body = await request.json()
        run_id = request.headers["x-tether-run-id"]
        seen.append(run_id)
        assert body["run_id"] == run_id
        out = await run_sync(body, run_id)
        return PlainTextResponse(out)

    async def run_sync(body: dict[str, Any], run_id: str) -> str:
        import anyio

        return await anyio.to_thread.run_sync(
            behave, body, run_id, env.proc.url, env.agent_key, "good"
        )

    server = ThreadedServer(
        Starlette(routes=[Route("/task", endpoint, methods=["POST"])]), "127.0.0.1", free_port()
    )
    try:
        url = f"http://127.0.0.1:{server.server.config.port}/task"
        res = env.tether(
            "eval",
            "run",
            "suite.yaml",
            "--agent",
            url,
            "--version",
            "v2h",
            "--repeat",
            "1",
            "--json",
        )
        assert res.returncode == 0, res.stderr
        via_http = json.loads(res.stdout)
        assert via_http["success"]["successes"] == 2
        assert sorted(seen) == sorted(a["run_id"] for a in via_http["attempts"])
    finally:
        server.stop()
    res = env.tether(
        "eval",
        "run",
        "suite.yaml",
        "--agent",
        "tests.e2e.eval_agent:as_callable",
        "--version",
        "v2c",
        "--repeat",
        "1",
    )
    assert res.returncode == 0, res.stderr
    assert "success at target cost: 2/2 = 100.0%" in res.stdout
    assert "pass@k" in res.stdout


FIXTURE_SUITE = """\
suite: fixtures-e2e
agent: support
repeats: 2
tasks:
  - id: ada
    input: {email: ada@example.com}
    fixtures:
      tools: {demo.lookup_customer: "Ada Lovelace, VIP since 1843"}
      llm: {replies: ["FIXTURE-PLAN one", "FIXTURE-PLAN two"]}
    assert:
      - {name: saw the scripted plan, output_contains: "FIXTURE-PLAN one"}
      - {name: saw the scripted lookup, output_contains: "VIP since 1843"}
      - {name: looked up, tool_called: demo.lookup_customer}
  - id: alan
    input: {email: alan@example.com}
    assert:
      - {name: looked up, tool_called: demo.lookup_customer}
"""


def test_fixtures_reach_the_mock_llm_and_the_mcp_gateway(env: Env) -> None:
    (env.tmp / "fixtures.yaml").write_text(FIXTURE_SUITE)
    res = env.tether(
        "eval", "run", "fixtures.yaml", "--agent", f"{AGENT} echo", "--version", "vf",
        "--agent-key", env.agent_key, "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    failures = [(a["task_id"], r["reason"]) for a in out["attempts"] for r in a["results"]
                if not r["passed"]]  # fmt: skip
    assert failures == [], [a["error"] for a in out["attempts"]]
    for a in out["attempts"]:
        run = env.api.get(f"/runs/{a['run_id']}").json()
        spans = env.api.get(f"/runs/{a['run_id']}/spans").json()["items"]
        tool = next(s for s in spans if s["kind"] == "tool")
        llm = next(s for s in spans if s["kind"] == "llm")
        if a["task_id"] == "ada":
            # each attempt is its own session of the script: both got its first reply
            assert llm["output"] == "FIXTURE-PLAN one"
            assert tool["attributes"]["tether.decision"]["fixture"] is True
            assert "VIP since 1843" in tool["output"]
        else:  # no fixtures: the real demo server and the mock's own reply
            assert "FIXTURE" not in run["output"] and "VIP" not in run["output"]
            assert "fixture" not in tool["attributes"]["tether.decision"]
            assert llm["output"].startswith("mock reply")


LIMITS_POLICY = """\
agent: {agent}
budgets:
  run: {{{cap}}}
tools:
  - {{match: "demo.*", allow: true}}
"""
LIMITS_SUITE = """\
suite: limits-e2e
agent: {agent}
repeats: 1
tasks:
  - id: t1
    input: {{email: ada@example.com}}
    assert:
      - {{name: within budget, no_budget_refusal: true}}
      - {{name: not killed, no_kill: true}}
"""


def _limited(env: Env, agent: str, cap: str, variant: str) -> dict[str, Any]:
    """An eval of `agent` (whose policy caps its runs with `cap`) by the `variant` agent."""
    policy = LIMITS_POLICY.format(agent=agent, cap=cap)
    assert env.api.post("/policies", json={"source": policy}).status_code == 201
    key = env.api.post("/keys", json={"scopes": ["agent", "ingest"], "agent": agent}).json()
    (env.tmp / f"{agent}.yaml").write_text(LIMITS_SUITE.format(agent=agent))
    res = env.tether(
        "eval", "run", f"{agent}.yaml", "--agent", f"{AGENT} {variant}", "--version", "v1",
        "--agent-key", key["key"], "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    (attempt,) = json.loads(res.stdout)["attempts"]
    return {r["name"]: r for r in attempt["results"]} | {"_run": attempt["run_id"]}


def test_a_budget_refusal_and_a_kill_fail_their_assertions_with_the_reason(env: Env) -> None:
    refused = _limited(env, "capped", "max_llm_calls: 1", "overspend")
    assert refused["within budget"]["passed"] is False
    assert refused["within budget"]["reason"] == "1 budget refusal(s) recorded"
    assert refused["not killed"]["passed"] is True
    killed = _limited(env, "timed", "max_duration_s: 1", "slow")
    assert killed["not killed"]["passed"] is False
    assert killed["not killed"]["reason"] == "run killed: max_duration_s exceeded"
    run = env.api.get(f"/runs/{killed['_run']}").json()
    assert run["status"] == "killed"  # the agent's own "done" does not undo the kill
