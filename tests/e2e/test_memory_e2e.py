"""Memory end to end against a real `tether serve` on SQLite with the sqlite-vec index and the mock
LLM as the embedding provider: the SDK's remember/recall inside a run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import tether
from tests.conftest import ServerProcess
from tests.gateway.llm_env import MockServer
from tether.sdk._memory import MemoryRequestError
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade


@pytest.fixture(scope="module")
def memory_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("memory-e2e")
    mock = MockServer({"replies": [], "embedding_dim": 64})
    config = tmp / "tether.yaml"
    config.write_text(yaml.safe_dump({
        "providers": [{"name": "mock", "kind": "openai", "base_url": mock.url + "/v1",
                       "models": ["mock-embed"]}],
        "pricing": {"mock-embed": {"input_cost_per_token": 1e-7, "output_cost_per_token": 0}},
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
