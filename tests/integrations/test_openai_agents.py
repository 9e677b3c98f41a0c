"""The OpenAI Agents SDK (real `openai-agents`) against a running tether (SQLite and PostgreSQL):
the TracingProcessor turns a run into one tether run with agent and function spans while the
gateway records the one LLM call; `needs_approval` asks tether's policy (approval pauses the
Agents run, deny refuses the call); nothing goes to the vendor's trace endpoint."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import agents
import pytest
from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool
from openai import AsyncOpenAI

import tether
from tests.integrations.conftest import Tether
from tether.integrations.openai_agents import TetherTracingProcessor, needs_approval
from tether.store.keys import create_key
from tether.store.policies import apply_policy

POLICY = """\
agent: oa-agent
tools:
  - {match: "weather.*", allow: true}
  - {match: "mail.send", approval: required}
  - {match: "erp.delete_*", allow: false}
"""


@pytest.fixture
def oa(tether_api: Tether) -> Iterator[tuple[Tether, str, TetherTracingProcessor]]:
    apply_policy(tether_api.db, POLICY, "test", datetime.now(UTC))
    key = create_key(tether_api.db, scopes="agent,ingest", agent="oa-agent")[1]
    tether.shutdown()
    tether.init(tether_api.url, api_key=key, schedule_delay_ms=50)
    processor = TetherTracingProcessor("oa-agent", version="v1")
    agents.set_trace_processors([processor])  # the only processor: no vendor exporter
    yield tether_api, key, processor
    tether.shutdown()


def model(api: Tether, key: str) -> OpenAIChatCompletionsModel:
    client = AsyncOpenAI(base_url=api.url + "/llm/v1", api_key=key, max_retries=0)
    return OpenAIChatCompletionsModel(model="mock-small", openai_client=client)


@function_tool
def get_weather(city: str) -> str:
    """Today's weather in a city."""
    return f"sunny in {city}, 21 C"


def _spans(api: Tether, run_id: str, want: set[str], timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        r = api.admin.get(f"/runs/{run_id}/spans")
        items = r.json()["items"] if r.status_code == 200 else []
        if want <= {s["name"] for s in items} or time.monotonic() > deadline:
            return list(items)
        time.sleep(0.05)


async def test_an_agents_run_is_one_tether_run(
    oa: tuple[Tether, str, TetherTracingProcessor],
) -> None:
    api, key, processor = oa
    task = f"T-{uuid.uuid4().hex[:6]}"
    agent = Agent(name="weather", instructions="Answer with the tool.", model=model(api, key),
                  tools=[get_weather], tool_use_behavior="stop_on_first_tool")  # fmt: skip
    config = processor.run_config(task_id=task, user="alice")
    result = await Runner.run(agent, "[[tool]] weather in Paris?", run_config=config)
    assert result.final_output == "sunny in Paris, 21 C"
    tether.flush()
    run_id = processor.run_id_of(config.trace_id or "")
    # the gateway writes its LLM span in the background: wait for it too, not only the SDK's
    spans = _spans(api, run_id, {"weather", "get_weather", "chat mock-small"})
    kinds = {s["name"]: s["kind"] for s in spans}
    assert kinds["weather"] == "agent" and kinds["get_weather"] == "tool"
    assert sum(1 for s in spans if s["kind"] == "llm") == 1  # the gateway's, counted once
    run = api.admin.get(f"/runs/{run_id}").json()
    assert (run["agent"], run["task_id"], run["user"], run["llm_calls"]) == (
        "oa-agent", task, "alice", 1)  # fmt: skip
    tool = next(s for s in spans if s["name"] == "get_weather")
    assert "sunny in Paris" in tool["output"]


async def test_needs_approval_is_decided_by_tethers_policy(
    oa: tuple[Tether, str, TetherTracingProcessor],
) -> None:
    api, key, processor = oa
    decide = needs_approval("mail.send")
    assert await decide(None, {"to": "ada@example.com"}, "call_1") is True
    assert await needs_approval("weather.today")(None, {"city": "Paris"}, "call_2") is False
    with pytest.raises(PermissionError, match=r"refused erp\.delete_invoice"):
        await needs_approval("erp.delete_invoice")(None, {"id": "INV-1"}, "call_3")

    @function_tool(needs_approval=needs_approval("mail.send"), name_override="get_weather")
    def send_weather(city: str) -> str:
        """Mails the weather."""
        raise AssertionError("must not run before a person approved it")

    agent = Agent(name="mailer", instructions="Use the tool.", model=model(api, key),
                  tools=[send_weather])  # fmt: skip
    result = await Runner.run(agent, "[[tool]] mail it", run_config=processor.run_config())
    assert [i.raw_item.name for i in result.interruptions] == ["get_weather"]


async def test_ten_concurrent_agents_runs_never_cross_link(
    oa: tuple[Tether, str, TetherTracingProcessor],
) -> None:
    api, key, processor = oa
    cities = [f"City{uuid.uuid4().hex[:6]}" for _ in range(10)]

    async def one(city: str) -> str:
        @function_tool(name_override="get_weather")
        def weather(city: str) -> str:
            """Today's weather in a city."""
            return f"sunny in {city}"

        agent = Agent(name="weather", instructions=f"Asked about {city}.", model=model(api, key),
                      tools=[weather], tool_use_behavior="stop_on_first_tool")  # fmt: skip
        config = processor.run_config(task_id=city)
        await Runner.run(agent, f"[[tool]] weather in {city}?", run_config=config)
        return processor.run_id_of(config.trace_id or "")

    run_ids = await asyncio.gather(*(one(c) for c in cities))
    tether.flush()
    assert len(set(run_ids)) == 10
    for city, run_id in zip(cities, run_ids, strict=True):
        spans = _spans(api, run_id, {"weather", "get_weather", "chat mock-small"})
        assert sum(1 for s in spans if s["kind"] == "llm") == 1  # the gateway's, once
        run = api.admin.get(f"/runs/{run_id}").json()
        assert run["task_id"] == city and run["llm_calls"] == 1
        text = " ".join(str(s.get("input")) + str(s.get("output")) for s in spans)
        assert city in text and not any(other in text for other in cities if other != city)
