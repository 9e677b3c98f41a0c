"""Memory end to end against a real `tether serve` on SQLite with the sqlite-vec index and the mock
LLM as the embedding provider: the SDK's remember/recall inside a run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select, update

import tether
from tests.conftest import ServerProcess
from tests.gateway.llm_env import MockServer
from tests.gateway.mcp.conftest import mcp_client
from tether.sdk._memory import MemoryRequestError
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade
from tether.store.policies import apply_policy
from tether.store.tables import spans


@pytest.fixture(scope="module")
def memory_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("memory-e2e")
    mock = MockServer({"replies": [], "embedding_dim": 64})
    config = tmp / "tether.yaml"
    config.write_text(yaml.safe_dump({
        "providers": [{"name": "mock", "kind": "openai", "base_url": mock.url + "/v1",
                       "models": ["mock-embed", "mock-chat"]}],
        "pricing": {"mock-embed": {"input_cost_per_token": 1e-7, "output_cost_per_token": 0},
                    "mock-chat": {"input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7}},
        "memory": {"embedder": "gateway:mock-embed", "index": "sqlite-vec"},
    }))  # fmt: skip
    db_url = f"sqlite:///{tmp / 'tether.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    keys = {
        a: create_key(engine, scopes="agent,ingest", agent=a)[1] for a in ("support", "billing")
    }
    keys["admin"] = create_key(engine, scopes="admin")[1]
    proc = ServerProcess(tmp / "home", db_url, config=config)
    try:
        yield {"url": proc.url, "keys": keys, "engine": engine, "home": tmp}
    finally:
        proc.stop()
        mock.stop()
        engine.dispose()


@pytest.fixture
def as_agent(memory_server: dict[str, Any]) -> Iterator[Any]:
    def use(agent: str) -> None:
        tether.shutdown()
        tether.init(memory_server["url"], api_key=memory_server["keys"][agent],
                    schedule_delay_ms=50)  # fmt: skip

    yield use
    tether.shutdown()


def test_sdk_remembers_and_recalls_inside_a_run(
    memory_server: dict[str, Any], as_agent: Any
) -> None:
    as_agent("support")
    with tether.run(agent="support", task_id="T-mem-1", user="alice") as run:
        first = tether.memory.remember("alice prefers email over phone", key="contact:alice")
        hits = tether.memory.recall("does alice prefer email or phone?", k=3)
    assert first["status"] == "created"
    assert first["memory"]["source_run_id"] == run.id
    assert first["memory"]["user"] == "alice"
    assert hits[0]["memory"]["text"] == "alice prefers email over phone"
    # another user of the same agent does not see alice's memory
    with tether.run(agent="support", task_id="T-mem-2", user="bob"):
        assert tether.memory.recall("does alice prefer email or phone?") == []
    # the index in use is sqlite-vec, beside the database
    admin = {"Authorization": f"Bearer {memory_server['keys']['admin']}"}
    r = httpx.get(memory_server["url"] + "/api/v1/memory/namespaces", headers=admin)
    assert r.json()["index"] == "sqlite-vec"
    assert (Path(memory_server["home"]) / "tether.db.vec").exists()


def test_sdk_refusal_is_a_clear_error(memory_server: dict[str, Any], as_agent: Any) -> None:
    as_agent("billing")
    with pytest.raises(MemoryRequestError) as err:
        tether.memory.recall("anything", namespaces=["support"])
    assert err.value.status == 403 and err.value.code == "memory_not_granted"
    assert "memory.read_grants" in err.value.message


def test_langgraph_long_term_memory_on_tether(memory_server: dict[str, Any]) -> None:
    """A real LangGraph graph compiled with `store=TetherStore(...)`: a node writes a user's
    preference, a later invocation's node finds it by meaning; another agent's store cannot."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph
    from langgraph.store.base import BaseStore

    from tether.integrations.langgraph_store import TetherStore, TetherStoreError

    class State(TypedDict, total=False):
        user: str
        note: str
        question: str
        answer: str

    def remember(state: State, *, store: BaseStore) -> State:
        if state.get("note"):
            store.put(("users", state["user"], "prefs"), "contact", {"text": state["note"]})
        return {}

    def recall(state: State, *, store: BaseStore) -> State:
        if not state.get("question"):
            return {}
        hits = store.search(("users", state["user"]), query=state["question"], limit=1)
        return {"answer": hits[0].value["text"] if hits else "nothing"}

    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_node("recall", recall)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "recall")
    builder.add_edge("recall", END)
    store = TetherStore(memory_server["url"], memory_server["keys"]["support"],
                        index_fields=["text"])  # fmt: skip
    graph = builder.compile(store=store)
    graph.invoke({"user": "carol", "note": "carol wants replies by sms"})
    graph.invoke({"user": "dave", "note": "dave wants a phone call"})
    out = graph.invoke({"user": "carol", "question": "how does carol want replies"})
    assert out["answer"] == "carol wants replies by sms"
    item = store.get(("users", "carol", "prefs"), "contact")
    assert item is not None and item.value == {"text": "carol wants replies by sms"}
    assert ("users", "carol", "prefs") in store.list_namespaces(prefix=("users",))
    store.delete(("users", "carol", "prefs"), "contact")
    assert store.get(("users", "carol", "prefs"), "contact") is None
    other = TetherStore(memory_server["url"], memory_server["keys"]["billing"])
    assert other.search(("users", "dave")) == []
    with pytest.raises(TetherStoreError) as err:
        TetherStore(memory_server["url"], memory_server["keys"]["billing"],
                    namespace="support").search(("users",), query="phone")  # fmt: skip
    assert err.value.code == "memory_not_granted"


async def test_memory_through_the_mcp_gateway_is_governed(memory_server: dict[str, Any]) -> None:
    """memory.* are tools of tether's MCP gateway: listed by policy, each call a tool span of
    the run, forget (irreversible) held for approval, another agent's namespace refused."""
    engine = memory_server["engine"]
    apply_policy(engine, "agent: support\ntools:\n  - {match: \"memory.forget\", allow: false}\n"
                 "  - {match: \"memory.*\", allow: true}\n", "test", datetime.now(UTC))  # fmt: skip
    run = "run_memory_mcp_000000001"
    async with mcp_client(memory_server["url"], memory_server["keys"]["support"], run) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"memory.search", "memory.write"} <= names and "memory.forget" not in names
        w = await client.call_tool("memory.write", {"text": "erin pays by bank transfer",
                                                    "key": "pay:erin"})  # fmt: skip
        assert not w.is_error, w
        found = await client.call_tool("memory.search", {"query": "how does erin pay"})
        assert found.structured_content["memories"][0]["text"] == "erin pays by bank transfer"
        denied = await client.call_tool("memory.forget", {"id": "mem_x"})
        assert denied.is_error and "denied" in denied.content[0].text
        other = await client.call_tool("memory.search", {"query": "x", "namespaces": ["billing"]})
        assert other.is_error and "memory.read_grants" in other.content[0].text
    mine = select(spans.c.name).where(spans.c.run_id == run, spans.c.kind == "tool")
    with engine.connect() as conn:
        names = [r.name for r in conn.execute(mine)]
    assert "memory.write" in names and "memory.search" in names


def test_cli_memory_search_and_run_replay(memory_server: dict[str, Any]) -> None:
    """`tether memory search` and `tether runs replay` against the running server: the recorded
    steps, then the LLM steps re-executed on a model, diverging where the recording differs."""
    import json as _json

    from typer.testing import CliRunner

    from tether.cli.main import app

    url, key = memory_server["url"], memory_server["keys"]["support"]
    env = {"TETHER_URL": url, "TETHER_API_KEY": key}
    headers = {"Authorization": f"Bearer {key}", "X-Tether-Run-Id": "run_replay_source_0001"}
    httpx.post(url + "/api/v1/memory/memories", json={"text": "frank is on the gold plan"},
               headers=headers).raise_for_status()  # fmt: skip
    for q in ("what plan is frank on?", "and since when?"):
        body = {"model": "mock-chat", "messages": [{"role": "user", "content": q}]}
        httpx.post(url + "/llm/v1/chat/completions", json=body, headers=headers,
                   timeout=30).raise_for_status()  # fmt: skip
    runner = CliRunner()
    found = runner.invoke(app, ["memory", "search", "which plan is frank on", "--json"], env=env)
    assert found.exit_code == 0, found.output
    assert _json.loads(found.output)["items"][0]["memory"]["text"] == "frank is on the gold plan"
    engine = memory_server["engine"]
    llm = spans.c.run_id == "run_replay_source_0001"
    for _ in range(100):  # the gateway writes its spans in the background
        with engine.connect() as conn:
            if (
                len(conn.execute(select(spans.c.span_id).where(llm, spans.c.kind == "llm")).all())
                == 2
            ):
                break
        time.sleep(0.1)
    shown = runner.invoke(app, ["runs", "replay", "run_replay_source_0001", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    kinds = [s["kind"] for s in _json.loads(shown.output)["steps"]]
    assert kinds.count("llm") == 2 and "embedding" in kinds
    # the recording of the second call says something else: the re-execution diverges there
    with engine.begin() as conn:
        newest = select(spans.c.span_id).where(llm, spans.c.kind == "llm")
        second = conn.execute(newest.order_by(spans.c.started_at.desc()).limit(1)).scalar_one()
        conn.execute(update(spans).where(llm, spans.c.span_id == second).values(output="gold"))
    again = runner.invoke(app, ["runs", "replay", "run_replay_source_0001", "--model",
                                "mock-chat", "--json"], env=env)  # fmt: skip
    assert again.exit_code == 0, again.output
    data = _json.loads(again.output)
    assert [c["same"] for c in data["compared"]] == [True, False]
    assert data["first_divergence"] == data["compared"][1]["n"]
