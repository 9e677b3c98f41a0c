"""The LangChain / LangGraph callback handler against a running tether (SQLite and PostgreSQL):
a graph's nodes and tools land as one run with the agent's attribution, the LLM call made
through the gateway lands in the same run once (not again as a handler span), and ten
concurrent runs never cross-link."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypedDict

import pytest
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from openai import OpenAI

import tether
from tests.integrations.conftest import Tether
from tether.integrations.langchain import TetherCallbackHandler


@pytest.fixture
def sdk(tether_api: Tether) -> Iterator[Tether]:
    tether.shutdown()
    tether.init(tether_api.url, api_key=tether_api.agent_key, schedule_delay_ms=50)
    yield tether_api
    tether.shutdown()


@tool
def lookup_invoice(invoice: str) -> str:
    """Looks an invoice up in the ERP."""
    return f"{invoice}: 1,200 EUR, due 2026-12-31"


class Triage(TypedDict, total=False):
    invoice: str
    facts: str
    verdict: str


def triage_graph(api: Tether, handler: TetherCallbackHandler) -> Any:
    llm = OpenAI(base_url=api.url + "/llm/v1", api_key=api.agent_key,
                 default_headers=handler.headers(), max_retries=0)  # fmt: skip

    def gather(s: Triage) -> dict[str, Any]:
        return {"facts": lookup_invoice.invoke({"invoice": s["invoice"]})}

    def decide(s: Triage) -> dict[str, Any]:
        reply = llm.chat.completions.create(
            model="mock-small", messages=[{"role": "user", "content": f"Flag? {s['facts']}"}]
        )
        return {"verdict": reply.choices[0].message.content or ""}

    b = StateGraph(Triage)
    b.add_node("gather", gather)
    b.add_node("decide", decide)
    b.add_edge(START, "gather")
    b.add_edge("gather", "decide")
    b.add_edge("decide", END)
    return b.compile()


def _run(api: Tether, run_id: str, llm_calls: int, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = api.admin.get(f"/runs/{run_id}")
        if r.status_code == 200:
            run = r.json()
            names = {s["name"] for s in api.admin.get(f"/runs/{run_id}/spans").json()["items"]}
            if run["llm_calls"] >= llm_calls and {"gather", "decide", "lookup_invoice"} <= names:
                return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} incomplete: {r.text[:300]}")
        time.sleep(0.05)


def test_a_graph_with_the_handler_is_one_run(sdk: Tether) -> None:
    task = f"INV-{uuid.uuid4().hex[:6]}"
    handler = TetherCallbackHandler("lg-agent", task_id=task, user="alice", version="v2")
    out = triage_graph(sdk, handler).invoke({"invoice": task}, {"callbacks": [handler]})
    assert task in out["verdict"]  # the mock echoes the prompt
    tether.flush()
    run = _run(sdk, handler.run_id, llm_calls=1)
    assert (run["agent"], run["task_id"], run["user"], run["version"]) == (
        "lg-agent", task, "alice", "v2")  # fmt: skip
    assert run["llm_calls"] == 1  # the gateway's span; the handler recorded none of its own
    spans = sdk.admin.get(f"/runs/{handler.run_id}/spans").json()["items"]
    kinds = {s["name"]: s["kind"] for s in spans}
    assert kinds["lookup_invoice"] == "tool" and kinds["gather"] == "chain"
    assert sum(1 for s in spans if s["kind"] == "llm") == 1
    tool_span = next(s for s in spans if s["name"] == "lookup_invoice")
    assert "1,200 EUR" in tool_span["output"]


def test_ten_concurrent_runs_never_cross_link(sdk: Tether) -> None:
    tasks = [f"INV-{uuid.uuid4().hex[:6]}" for _ in range(10)]

    def one(task: str) -> str:
        handler = TetherCallbackHandler("lg-agent", task_id=task)
        triage_graph(sdk, handler).invoke({"invoice": task}, {"callbacks": [handler]})
        return handler.run_id

    with ThreadPoolExecutor(10) as pool:
        run_ids = list(pool.map(one, tasks))
    tether.flush()
    assert len(set(run_ids)) == 10
    for task, run_id in zip(tasks, run_ids, strict=True):
        run = _run(sdk, run_id, llm_calls=1)
        assert run["task_id"] == task and run["llm_calls"] == 1
        spans = sdk.admin.get(f"/runs/{run_id}/spans").json()["items"]
        others = [t for t in tasks if t != task]
        text = " ".join(str(s.get("input")) + str(s.get("output")) for s in spans)
        assert task in text and not any(t in text for t in others)
