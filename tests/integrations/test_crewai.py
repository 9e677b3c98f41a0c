"""CrewAI (real `crewai`, in the agent's venv .venv-agents) against a running tether (SQLite and
PostgreSQL): examples/crewai_crew.py kicks off ten crews at once (three on PostgreSQL), each
with its model behind the LLM gateway and its tools behind the MCP gateway (send_email held
until approved). Each crew is one tether run: the TetherCrewListener's crew, task, agent and
tool spans beside the gateway's LLM and tool spans, attributed to the agent, version, task and
user, its LLM calls, tool calls and cost counted once, no span of another crew in it, and
nothing sent anywhere but tether."""

from __future__ import annotations

import json
import os
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integrations.agents_venv import (
    GUARD,
    agents_python,
    counted_once,
    run_concurrently,
    settled,
)
from tests.integrations.conftest import Tether

AGENT = "collections-crew"
POLICY = f"""\
agent: {AGENT}
tools:
  - {{match: "demo.lookup_customer", allow: true}}
  - {{match: "demo.send_email", approval: required}}
"""
# the mock script's path: lookup_customer, send_email, then the answer
LLM_CALLS, TOOL_CALLS = 3, 2
ANSWER = "Reminder sent to ada@example.com for INV-1042."


def test_importing_without_crewai_says_what_to_install() -> None:
    from tether.integrations import crewai as integration

    with pytest.raises(ImportError, match=r"pip install 'tether\[crewai\]'"):
        integration.TetherCrewListener("x")


def test_ten_concurrent_crews_are_ten_runs_counted_once(tether_api: Tether) -> None:
    done = run_concurrently(tether_api, "crewai_crew.py", AGENT, POLICY, user="alice")
    for line in done.runs:
        assert line["output"] == ANSWER
        run = counted_once(tether_api, line, AGENT, "alice", llm_calls=LLM_CALLS,
                           tool_calls=TOOL_CALLS)  # fmt: skip
        spans = run["spans"]
        # the crew's own spans, one of each, in this run and no other
        names = [s["name"] for s in spans]
        assert names.count(AGENT) == 1 and names.count("Collections clerk") == 1
        assert sum(1 for n in names if n.startswith("task [[remind-overdue]]")) == 1
        assert names.count("tool lookup_customer") == names.count("tool send_email") == 1
        framework = [s for s in spans if "tether.task_id" in (s["attributes"] or {})]
        assert len(framework) == 5  # the crew (root), its task, its agent, two tools
        assert {s["attributes"]["tether.task_id"] for s in framework} == {line["task_id"]}
        root = next(s for s in spans if s["name"] == AGENT)
        clerk = next(s for s in spans if s["name"] == "Collections clerk")
        task = next(s for s in spans if s["name"].startswith("task "))
        assert task["parent_id"] == root["span_id"] and clerk["parent_id"] == task["span_id"]
        tools = [s for s in spans if s["name"].startswith("tool ")]
        assert all(s["parent_id"] == clerk["span_id"] for s in tools)


def test_a_kickoff_outside_run_with_its_model_off_the_gateway_is_a_run_of_its_own(
    tether_api: Tether,
) -> None:
    """llm_via_gateway=False: the listener records CrewAI's LLM calls (tokens, so cost) once."""
    python = agents_python()
    script = Path(__file__).with_name("crewai_off_gateway.py")
    env = {**os.environ, "TETHER_URL": tether_api.url, "MOCK_URL": tether_api.mock.url + "/v1",
           "TETHER_API_KEY": tether_api.key("crew-off-gateway")}  # fmt: skip
    done = subprocess.run([str(python), str(GUARD), str(script)], env=env, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TETHER_EGRESS []" in done.stderr
    assert (
        json.loads(done.stdout.splitlines()[-1])["output"]
        == "Reminder sent to ada@example.com for INV-1042."
    )
    runs = tether_api.admin.get("/runs", params={"agent": "crew-off-gateway"}).json()["items"]
    assert len(runs) == 1
    run = settled(tether_api, runs[0]["id"], llm_calls=3, tool_calls=2)
    assert (run["version"], run["status"], run["output"]) == (
        "v2", "succeeded", ANSWER)  # fmt: skip
    spans = run["spans"]
    llm = [s for s in spans if s["kind"] == "llm"]
    assert len(llm) == 3 and all(s["input_tokens"] and s["output_tokens"] for s in llm)
    assert Decimal(str(run["cost_usd"])) == sum(Decimal(str(s["cost_usd"])) for s in llm) > 0
    assert sorted(s["name"] for s in spans if s["kind"] == "tool") == [
        "lookup_customer", "send_email"]  # fmt: skip
    clerk = next(s for s in spans if s["name"] == "Offline clerk")
    assert all(s["parent_id"] == clerk["span_id"] for s in llm)
