"""AutoGen (real `autogen-agentchat` 0.7 and `autogen-ext`, in the agent's venv .venv-agents)
against a running tether (SQLite and PostgreSQL): examples/autogen_agent.py runs ten
AssistantAgents (three on PostgreSQL) at once in one event loop, each with its OpenAI client
behind the LLM gateway and its tools behind the MCP gateway (send_email held until approved).
Each is one tether run: AutoGen's own spans (create_agent, invoke_agent, execute_tool with the
ToolCall event's arguments and result) beside the gateway's LLM and tool spans, attributed,
counted once, no span of another run in it, and nothing sent anywhere but tether."""

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

AGENT = "collections-autogen"
POLICY = f"""\
agent: {AGENT}
tools:
  - {{match: "demo.lookup_customer", allow: true}}
  - {{match: "demo.send_email", approval: required}}
"""
LLM_CALLS, TOOL_CALLS = 3, 2


def test_importing_without_autogen_says_what_to_install() -> None:
    from tether.integrations import autogen as integration

    with pytest.raises(ImportError, match=r"pip install 'tether\[autogen\]'"):
        integration.TetherAutoGen("x")


def test_ten_concurrent_agents_are_ten_runs_counted_once(tether_api: Tether) -> None:
    done = run_concurrently(tether_api, "autogen_agent.py", AGENT, POLICY, user="bob")
    for line in done.runs:
        assert line["output"] == "Reminder sent to ada@example.com for INV-1042."
        run = counted_once(tether_api, line, AGENT, "bob", llm_calls=LLM_CALLS,
                           tool_calls=TOOL_CALLS)  # fmt: skip
        assert run["output"] == line["output"]
        spans = run["spans"]
        names = [s["name"] for s in spans]
        for name in (AGENT, "invoke_agent collections_autogen", "tool lookup_customer",
                     "tool send_email"):  # fmt: skip
            assert names.count(name) == 1, (name, names)
        framework = [s for s in spans if "tether.task_id" in (s["attributes"] or {})]
        assert {s["attributes"]["tether.task_id"] for s in framework} == {line["task_id"]}
        assert {s["attributes"]["tether.run_id"] for s in framework} == {line["run_id"]}
        invoke = next(s for s in spans if s["name"].startswith("invoke_agent"))
        tools = {s["name"]: s for s in spans if s["name"].startswith("tool ")}
        assert all(s["parent_id"] == invoke["span_id"] for s in tools.values())
        # the ToolCall event's arguments and result, on AutoGen's own tool span
        sent = tools["tool send_email"]
        assert json.loads(sent["input"])["to"] == "ada@example.com"
        assert sent["output"].startswith("sent email #")


def test_llm_calls_off_the_gateway_are_recorded_from_autogens_events(tether_api: Tether) -> None:
    """llm_via_gateway=False: each LLMCall event is one LLM span (tokens, so cost), once."""
    python = agents_python()
    script = Path(__file__).with_name("autogen_off_gateway.py")
    env = {**os.environ, "TETHER_URL": tether_api.url, "MOCK_URL": tether_api.mock.url + "/v1",
           "TETHER_API_KEY": tether_api.key("autogen-off-gateway")}  # fmt: skip
    done = subprocess.run([str(python), str(GUARD), str(script)], env=env, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TETHER_EGRESS []" in done.stderr
    line = json.loads(done.stdout.splitlines()[-1])
    assert line["output"] == "Reminder sent to ada@example.com for INV-1042."
    run = settled(tether_api, line["run_id"], llm_calls=3, tool_calls=2)
    assert (run["agent"], run["version"], run["task_id"], run["user"], run["status"]) == (
        "autogen-off-gateway", "v2", "OFF-1", "carol", "succeeded")  # fmt: skip
    spans = run["spans"]
    llm = [s for s in spans if s["kind"] == "llm"]
    assert len(llm) == 3 and all(s["input_tokens"] and s["output_tokens"] for s in llm)
    assert Decimal(str(run["cost_usd"])) == sum(Decimal(str(s["cost_usd"])) for s in llm) > 0
    tools = {s["name"]: s for s in spans if s["kind"] == "tool"}  # AutoGen's, named by tool
    assert sorted(tools) == ["lookup_customer", "send_email"]
    assert tools["send_email"]["output"] == "sent email #1 to ada@example.com"
