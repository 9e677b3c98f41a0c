"""The async twins against a running tether (SQLite and PostgreSQL): `ainvoke` holds an
interrupt as a tether approval and waits for it without blocking the event loop, async
`@idempotent` tools run once however often the node is replayed, `aresume_requested` takes
`tether runs resume` requests, the hard-cap config is enforced on `graph.ainvoke` (the LLM
gateway's token cap through `arun_headers`, `max_iterations` by the saver), and the LangChain
handler records an async graph as one run."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any, TypedDict

import openai
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

import tether
from tests.integrations.conftest import Tether
from tether.core.errors import BudgetExceededError
from tether.integrations.langchain import TetherCallbackHandler
from tether.integrations.langgraph import (
    TetherSaver,
    ainvoke,
    aresume_requested,
    idempotent,
)

EFFECTS: Counter[str] = Counter()


@pytest.fixture
def api_sdk(tether_api: Tether) -> Iterator[Tether]:
    tether.shutdown()
    tether.init(tether_api.url, api_key=tether_api.agent_key, schedule_delay_ms=50)
    yield tether_api
    tether.shutdown()


class Mail(TypedDict, total=False):
    to: str
    charged: str
    sent: str


def mail_graph(saver: TetherSaver) -> Any:
    @idempotent(saver, name="billing.charge")
    async def charge(to: str) -> str:
        EFFECTS[f"charge:{to}"] += 1
        return f"charged {to}"

    @idempotent(saver, name="mail.send")
    async def send(to: str) -> str:
        EFFECTS[f"send:{to}"] += 1
        return f"sent to {to}"

    async def send_email(s: Mail) -> dict[str, Any]:
        charged = await charge(s["to"])  # before the pause: replayed when the node resumes
        decision = interrupt({"action": "send_email", "to": s["to"]})
        if not decision["approved"]:
            return {"charged": charged, "sent": "not sent"}
        return {"charged": charged, "sent": await send(s["to"])}

    b = StateGraph(Mail)
    b.add_node("send_email", send_email)
    b.add_edge(START, "send_email")
    b.add_edge("send_email", END)
    return b.compile(checkpointer=saver)


async def _approve_when_held(api: Tether, thread_run: TetherSaver, thread_id: str) -> str:
    """Runs on the same event loop as `ainvoke`: it only gets to approve if that one waits
    without blocking the loop."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run_id = thread_run._runs.get(thread_id)
        if run_id:
            r = await asyncio.to_thread(
                api.admin.get, "/approvals", params={"run_id": run_id, "status": "pending"}
            )
            items = r.json()["items"]
            if items:
                await asyncio.to_thread(api.admin.post, f"/approvals/{items[0]['id']}/approve")
                return str(items[0]["id"])
        await asyncio.sleep(0.05)
    raise AssertionError("no approval was held")


async def test_ainvoke_waits_for_the_approval_without_blocking_the_loop(api_sdk: Tether) -> None:
    api = api_sdk
    saver = TetherSaver(api.url, api_key=api.agent_key)
    graph = mail_graph(saver)
    to = f"{uuid.uuid4().hex[:8]}@example.com"
    thread_id = f"amail-{to}"
    config: Any = {"configurable": {"thread_id": thread_id}}
    outcome, approval = await asyncio.gather(
        ainvoke(graph, {"to": to}, config, wait_s=60), _approve_when_held(api, saver, thread_id)
    )
    assert outcome.status == "done" and outcome.result["sent"] == f"sent to {to}"
    assert api.admin.get(f"/approvals/{approval}").json()["status"] == "approved"
    # the node ran twice (before the pause, then on resume); each tool once
    assert EFFECTS[f"charge:{to}"] == 1 and EFFECTS[f"send:{to}"] == 1
    run = api.admin.get(f"/runs/{outcome.run_id}").json()
    assert run["status"] == "succeeded" and run["agent"] == "lg-agent"
    assert outcome.run_id == await saver.arun_id(config) == saver.run_id(config)

    assert len([t async for t in saver.alist(config)]) >= 3  # the async list twin

    # a resume from the checkpoint before the send replays the step: nothing is sent again
    timeline = api.admin.get(f"/runs/{outcome.run_id}/checkpoints").json()["items"]
    before_send = next(c for c in timeline if c["interrupts"])["checkpoint_id"]
    r = api.admin.post(f"/runs/{outcome.run_id}/resume", json={"checkpoint_id": before_send})
    assert r.status_code == 202, r.text
    replayed, _ = await asyncio.gather(
        aresume_requested(graph, wait_s=60), _approve_when_held(api, saver, thread_id)
    )
    assert [(o.run_id, o.status) for o in replayed] == [(outcome.run_id, "done")]
    # the replay forked the thread (LangGraph numbers its steps one higher) and the person
    # approved again: still, the charge before the pause and the email behind it ran once
    assert EFFECTS[f"send:{to}"] == 1 and EFFECTS[f"charge:{to}"] == 1
    await saver.aclose()


async def test_ainvoke_paused_returns_and_a_denial_reaches_the_graph(api_sdk: Tether) -> None:
    api = api_sdk
    saver = TetherSaver(api.url, api_key=api.agent_key)
    graph = mail_graph(saver)
    to = f"{uuid.uuid4().hex[:8]}@example.com"
    config: Any = {"configurable": {"thread_id": f"amail-{to}"}}
    paused = await ainvoke(graph, {"to": to}, config, wait_s=0)
    assert paused.status == "awaiting_approval" and len(paused.pending) == 1
    assert api.admin.get(f"/runs/{paused.run_id}").json()["status"] == "awaiting_approval"
    api.admin.post(f"/approvals/{paused.pending[0]}/deny", json={"reason": "no"})
    outcome = await ainvoke(graph, None, config, wait_s=10)
    assert outcome.status == "done" and outcome.result["sent"] == "not sent"
    assert EFFECTS[f"send:{to}"] == 0
    await saver.aclose()


class Task(TypedDict, total=False):
    task: str
    n: int


async def test_the_hard_cap_config_stops_an_async_graph(api_sdk: Tether) -> None:
    api = api_sdk
    saver = TetherSaver(api.url, api_key=api.agent_key)

    async def think(s: Task, config: RunnableConfig) -> dict[str, Any]:
        client = openai.AsyncOpenAI(base_url=api.url + "/llm/v1", api_key=api.agent_key,
                                    default_headers=await saver.arun_headers(config),
                                    max_retries=0)  # fmt: skip
        await client.chat.completions.create(
            model="mock-small", messages=[{"role": "user", "content": s["task"]}]
        )
        return {"n": s.get("n", 0) + 1}

    b = StateGraph(Task)
    b.add_node("think", think)
    b.add_edge(START, "think")
    b.add_conditional_edges("think", lambda s: "think")  # a runaway
    graph = b.compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": f"acap-{uuid.uuid4().hex[:8]}",
                                    "max_tokens": 50000, "max_iterations": 25,
                                    "cost_limit_usd": 2.00}, "recursion_limit": 1000}  # fmt: skip
    with pytest.raises(openai.APIStatusError) as refused:
        await ainvoke(graph, {"task": "[[runaway]] think"}, config, wait_s=0)
    assert refused.value.status_code == 402
    run_id = await saver.arun_id(config)
    deadline = time.monotonic() + 30
    while (run := api.admin.get(f"/runs/{run_id}").json())["llm_calls"] < 10:
        assert time.monotonic() < deadline, run
        await asyncio.sleep(0.05)
    assert run["input_tokens"] + run["output_tokens"] <= 50000 and run["llm_calls"] < 25

    spin = StateGraph(Task)
    spin.add_node("spin", lambda s: {"n": s.get("n", 0) + 1})
    spin.add_edge(START, "spin")
    spin.add_conditional_edges("spin", lambda s: "spin")
    spinning = spin.compile(checkpointer=saver)
    config2: Any = {"configurable": {"thread_id": f"aspin-{uuid.uuid4().hex[:8]}",
                                     "max_iterations": 5}, "recursion_limit": 1000}  # fmt: skip
    with pytest.raises(BudgetExceededError, match="max_iterations"):
        await spinning.ainvoke({"n": 0}, config2)
    killed = api.admin.get(f"/runs/{await saver.arun_id(config2)}").json()
    assert killed["status"] == "killed"
    await saver.aclose()


class Triage(TypedDict, total=False):
    invoice: str
    verdict: str


async def test_the_handler_records_an_async_graph_as_one_run(api_sdk: Tether) -> None:
    api = api_sdk
    task = f"INV-{uuid.uuid4().hex[:6]}"
    handler = TetherCallbackHandler("lg-agent", task_id=task)
    client = openai.AsyncOpenAI(base_url=api.url + "/llm/v1", api_key=api.agent_key,
                                default_headers=handler.headers(), max_retries=0)  # fmt: skip

    async def decide(s: Triage) -> dict[str, Any]:
        reply = await client.chat.completions.create(
            model="mock-small", messages=[{"role": "user", "content": f"Flag? {s['invoice']}"}]
        )
        return {"verdict": reply.choices[0].message.content or ""}

    b = StateGraph(Triage)
    b.add_node("decide", decide)
    b.add_edge(START, "decide")
    b.add_edge("decide", END)
    out = await b.compile().ainvoke({"invoice": task}, {"callbacks": [handler]})
    assert task in out["verdict"]
    tether.flush()
    deadline = time.monotonic() + 30
    while True:
        run = api.admin.get(f"/runs/{handler.run_id}").json()
        spans = api.admin.get(f"/runs/{handler.run_id}/spans").json().get("items", [])
        if run.get("llm_calls") == 1 and "decide" in {s["name"] for s in spans}:
            break
        assert time.monotonic() < deadline, (run, spans)
        await asyncio.sleep(0.05)
    assert run["task_id"] == task and sum(1 for s in spans if s["kind"] == "llm") == 1
