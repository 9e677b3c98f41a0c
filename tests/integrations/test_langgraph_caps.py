"""The seed's example graph (examples/langgraph_agent.py: plan -> human_approval -> execute,
interrupt_before the approval) with TetherSaver in place of SqliteSaver, its LLM calls through
tether's gateway to the mock LLM, and the hard-cap run config enforced by tether (SQLite and
PostgreSQL): approve through the API and it finishes; a runaway is stopped by the token cap in
the gateway; a graph looping without LLM calls is stopped at max_iterations by the saver."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, TypedDict

import openai
import pytest
from langgraph.graph import START, StateGraph

from tests.integrations.conftest import Tether
from tether.core.errors import BudgetExceededError, RunKilledError
from tether.integrations.langgraph import TetherSaver, invoke

EXAMPLE = Path(__file__).parents[2] / "examples" / "langgraph_agent.py"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("langgraph_agent_example", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run_when(api: Tether, run_id: str, done: Any, timeout: float = 30.0) -> dict[str, Any]:
    """The run once `done(run)` holds (the gateway writes its spans in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = api.admin.get(f"/runs/{run_id}").json()
        if done(run) or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


CAPS = {"max_tokens": 50000, "max_iterations": 25, "cost_limit_usd": 2.00}


def test_the_example_pauses_before_approval_and_finishes_once_approved(tether_api: Tether) -> None:
    example = load_example()
    saver = TetherSaver(tether_api.url, api_key=tether_api.agent_key)
    graph = example.build(saver)
    thread = f"task-{uuid.uuid4().hex[:8]}"
    config = {"configurable": {"thread_id": thread, **CAPS}}
    task = "Analyze Q4 variance report and flag anomalies"

    paused = invoke(graph, {"task": task}, config, wait_s=0)
    assert paused.status == "awaiting_approval" and len(paused.pending) == 1
    approval = tether_api.admin.get(f"/approvals/{paused.pending[0]}").json()
    assert approval["tool"] == "langgraph.interrupt.human_approval"
    assert approval["arguments"]["interrupt_before"] == "human_approval"
    assert task in approval["arguments"]["state"]["plan"]  # the mock echoes the prompt
    run = _run_when(tether_api, paused.run_id, lambda r: r["llm_calls"] >= 1)
    assert run["status"] == "awaiting_approval" and run["llm_calls"] == 1

    done: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: done.update(o=invoke(graph, None, config, wait_s=60)))
    waiter.start()
    tether_api.admin.post(f"/approvals/{paused.pending[0]}/approve")
    waiter.join(60)
    assert done["o"].status == "done" and len(done["o"].result["findings"]) == 1
    run = _run_when(tether_api, paused.run_id, lambda r: r["llm_calls"] >= 2)
    assert run["status"] == "succeeded" and run["llm_calls"] == 2

    # the run's caps came from the run config and sit on its budget counter
    checkpoints = tether_api.admin.get(f"/runs/{paused.run_id}/checkpoints").json()["items"]
    assert [c["nodes"] for c in checkpoints if c["nodes"]] == [
        ["plan"],
        ["human_approval"],
        ["execute"],
    ]


def test_the_example_denied_ends_its_run_as_failed(tether_api: Tether) -> None:
    example = load_example()
    saver = TetherSaver(tether_api.url, api_key=tether_api.agent_key)
    graph = example.build(saver)
    config = {"configurable": {"thread_id": f"task-{uuid.uuid4().hex[:8]}", **CAPS}}
    paused = invoke(graph, {"task": "wire $1M"}, config, wait_s=0)
    tether_api.admin.post(f"/approvals/{paused.pending[0]}/deny", json={"reason": "no"})
    outcome = invoke(graph, None, config, wait_s=10)
    assert outcome.status == "denied"
    run = _run_when(tether_api, paused.run_id, lambda r: r["llm_calls"] >= 1)
    assert run["status"] == "failed" and "denied" in run["error"] and run["llm_calls"] == 1


def test_a_runaway_example_is_stopped_by_the_token_cap(tether_api: Tether) -> None:
    example = load_example()
    saver = TetherSaver(tether_api.url, api_key=tether_api.agent_key)
    graph = example.build(saver)
    config = {"configurable": {"thread_id": f"task-{uuid.uuid4().hex[:8]}", **CAPS}}
    paused = invoke(graph, {"task": "[[runaway]] loop", "rounds": 1000}, config, wait_s=0)
    tether_api.admin.post(f"/approvals/{paused.pending[0]}/approve")
    with pytest.raises(openai.APIStatusError) as refused:
        invoke(graph, None, config, wait_s=10)
    assert refused.value.status_code == 402
    assert "budget_exceeded" in refused.value.response.text
    run = _run_when(tether_api, paused.run_id, lambda r: r["llm_calls"] >= 10)
    # every answer is 3,000 tokens: the gateway admits calls while their worst case fits
    assert run["input_tokens"] + run["output_tokens"] <= 50000
    assert 10 <= run["llm_calls"] < 25


class Spin(TypedDict, total=False):
    n: int


def test_a_graph_looping_without_llm_calls_stops_at_max_iterations(tether_api: Tether) -> None:
    saver = TetherSaver(tether_api.url, api_key=tether_api.agent_key)
    b = StateGraph(Spin)
    b.add_node("spin", lambda s: {"n": s.get("n", 0) + 1})
    b.add_edge(START, "spin")
    b.add_conditional_edges("spin", lambda s: "spin")  # never ends on its own
    graph = b.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": f"spin-{uuid.uuid4().hex[:8]}", "max_iterations": 5,
                               "recursion_limit": 1000}}  # fmt: skip
    with pytest.raises(BudgetExceededError, match="max_iterations"):
        graph.invoke({"n": 0}, {**config, "recursion_limit": 1000})
    run_id = saver.run_id(config)
    run = tether_api.admin.get(f"/runs/{run_id}").json()
    assert run["status"] == "killed" and "max_iterations" in run["kill_reason"]
    # five super-steps committed; the sixth ran but never committed its checkpoint (an LLM call
    # in it would have been refused by the gateway first: max_iterations is max_llm_calls too)
    assert graph.get_state(config).metadata["step"] == 5
    # a killed run takes no more checkpoints
    with pytest.raises(RunKilledError):
        graph.invoke({"n": 0}, config)
