"""/api/v1/memory on SQLite and PostgreSQL, embedding through tether's own LLM gateway (the mock
LLM upstream): isolation between agents, grants from the policy, the run paying for its
embeddings, forget, who read what."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from tests.gateway.llm_env import MockServer
from tests.server.api_helpers import Api, make_api
from tether.config import load_settings
from tether.store.policies import apply_policy
from tether.store.tables import spans


@pytest.fixture(scope="module")
def mock_llm() -> Iterator[MockServer]:
    server = MockServer({"replies": [], "embedding_dim": 64})
    yield server
    server.stop()


@pytest.fixture
def api(tmp_path: Path, db_url: str, db: Engine, mock_llm: MockServer) -> Iterator[Api]:
    settings = load_settings(
        home=tmp_path / "home",
        database_url=db_url,
        providers=[{"name": "mock", "kind": "openai", "base_url": mock_llm.url + "/v1",
                    "models": ["mock-embed", "mock-small"]}],
        memory={"embedder": "gateway:mock-embed"},
        pricing={"mock-embed": {"input_cost_per_token": 1e-7, "output_cost_per_token": 0}},
    )  # fmt: skip
    api = make_api(settings, db)
    with api.client:  # runs the lifespan: the gateway's span writer, the memory index
        yield api


def _policy(db: Engine, source: str) -> None:
    apply_policy(db, source, "test", datetime.now(UTC))


def test_write_then_search_finds_the_related_fact(api: Api) -> None:
    support = api.key("agent", agent="support")
    c = api.client
    facts = ["customer 42 prefers email contact", "the refund window is 30 days",
             "invoices are due at the end of the month"]  # fmt: skip
    for text in facts:
        r = c.post("/api/v1/memory/memories", json={"text": text}, headers=support)
        assert r.status_code == 201, r.text
        assert r.json()["memory"]["namespace"] == "support"
    r = c.post("/api/v1/memory/search", json={"query": "how does customer 42 want contact", "k": 2},
               headers=support)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["memory"]["text"] == facts[0]


def test_a_store_without_memory_opens_its_vector_index_at_first_use(api: Api) -> None:
    """A SQLite store with no memory yet starts without its vector index (sqlite-vec, ~26 MB
    of RSS a server that never uses memory would keep); the first memory call opens it and
    the index then works. PostgreSQL opens it at start-up as before."""
    service = api.client.app.state.tether.memory  # type: ignore[attr-defined]
    database = api.db.url.database
    sqlite = api.db.dialect.name == "sqlite"
    assert service._index_ready is not sqlite
    support = api.key("agent", agent="support")
    for text in ("customer 42 prefers email contact", "the refund window is 30 days"):
        r = api.client.post("/api/v1/memory/memories", json={"text": text}, headers=support)
        assert r.status_code == 201, r.text
    assert service._index_ready
    if sqlite:
        assert service.index is not None and service.index.name == "sqlite-vec"
        assert Path(f"{database}.vec").exists()
    r = api.client.post("/api/v1/memory/search", json={"query": "refund window", "k": 1},
                        headers=support)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["memory"]["text"] == "the refund window is 30 days"


def test_a_store_with_memory_opens_its_vector_index_at_start(db: Engine) -> None:
    """Once a memory exists (or the index file does), start-up opens the index again, so a
    lagging index is rebuilt before the first search."""
    from tether.core.memory import Access
    from tether.store import memory as mem

    sqlite = db.dialect.name == "sqlite"
    assert mem.index_needed_at_start(db) is not sqlite
    mem.write(db, Access(None, None), namespace="ops", text="a fact", embedding=[1.0, 0.0],
              now=datetime.now(UTC), actor="test")  # fmt: skip
    assert mem.index_needed_at_start(db)


def test_embedding_is_an_llm_call_of_the_callers_run(api: Api) -> None:
    support = {**api.key("agent", agent="support"), "X-Tether-Run-Id": "run_memory_paid_000001"}
    r = api.client.post("/api/v1/memory/memories", json={"text": "a fact"}, headers=support)
    assert r.status_code == 201, r.text
    assert r.json()["memory"]["source_run_id"] == "run_memory_paid_000001"
    rows: list = []
    for _ in range(100):  # the gateway writes spans in the background
        with api.db.connect() as conn:
            rows = conn.execute(
                select(spans).where(spans.c.run_id == "run_memory_paid_000001")
            ).all()
        if rows:
            break
        time.sleep(0.1)
    assert rows and rows[0].kind in ("embedding", "llm") and rows[0].model == "mock-embed"


def test_another_agent_sees_nothing_until_granted(api: Api) -> None:
    support = api.key("agent", agent="support")
    billing = api.key("agent", agent="billing")
    c = api.client
    c.post("/api/v1/memory/memories", json={"text": "vip list: acme, globex"}, headers=support)
    r = c.post("/api/v1/memory/search", json={"query": "vip list"}, headers=billing)
    assert r.status_code == 200 and r.json()["items"] == []
    r = c.post("/api/v1/memory/search", json={"query": "vip", "namespaces": ["support"]},
               headers=billing)  # fmt: skip
    assert r.status_code == 403 and r.json()["error"]["code"] == "memory_not_granted"
    r = c.post(
        "/api/v1/memory/memories", json={"text": "x", "namespace": "support"}, headers=billing
    )
    assert r.status_code == 403
    _policy(api.db, "agent: billing\nmemory:\n  read_grants: [support]\n")
    r = c.post("/api/v1/memory/search", json={"query": "vip list", "namespaces": ["support"]},
               headers=billing)  # fmt: skip
    assert [h["memory"]["text"] for h in r.json()["items"]] == ["vip list: acme, globex"]


def test_supersede_forget_and_reads(api: Api) -> None:
    support = api.key("agent", agent="support")
    c = api.client
    first = c.post("/api/v1/memory/memories", json={"text": "plan is basic", "key": "plan:42"},
                   headers=support).json()  # fmt: skip
    second = c.post("/api/v1/memory/memories", json={"text": "plan is premium", "key": "plan:42"},
                    headers=support).json()  # fmt: skip
    assert second["status"] == "superseded" and second["superseded"] == first["memory"]["id"]
    listed = c.get("/api/v1/memory/namespaces/support/memories", headers=support).json()["items"]
    assert [m["text"] for m in listed] == ["plan is premium"]
    at = {"as_of": first["memory"]["created_at"]}
    before = c.get("/api/v1/memory/namespaces/support/memories", params=at, headers=support).json()
    assert [m["text"] for m in before["items"]] == ["plan is basic"]
    c.post("/api/v1/memory/search", json={"query": "plan"}, headers=support)
    reads = c.get("/api/v1/memory/namespaces/support/reads", headers=api.read).json()["items"]
    assert reads[0]["ids"] == [second["memory"]["id"]]
    gone = c.post("/api/v1/memory/forget", json={"id": second["memory"]["id"]}, headers=support)
    assert sorted(gone.json()["forgotten"]) == sorted(
        [first["memory"]["id"], second["memory"]["id"]]
    )
    assert (
        c.get(f"/api/v1/memory/memories/{second['memory']['id']}", headers=support).status_code
        == 404
    )


def test_operator_erases_a_user_everywhere(api: Api) -> None:
    support = {**api.key("agent", agent="support"), "X-Tether-User": "alice"}
    c = api.client
    c.post("/api/v1/memory/memories", json={"text": "alice's address is 1 rue x"}, headers=support)
    r = c.post("/api/v1/memory/forget", json={"user": "alice"}, headers=support)
    assert r.status_code == 400  # an agent may not erase a user
    r = c.post("/api/v1/memory/forget", json={"user": "alice"}, headers=api.admin)
    assert r.status_code == 200 and len(r.json()["forgotten"]) == 1
    ns = c.get("/api/v1/memory/namespaces", headers=api.admin).json()
    assert ns["items"][0]["memories"] == 0


def test_a_run_out_of_budget_cannot_embed_and_nothing_is_written(api: Api) -> None:
    _policy(api.db, "agent: broke\nbudgets:\n  run: {max_cost_usd: 0}\n")
    broke = {**api.key("agent", agent="broke"), "X-Tether-Run-Id": "run_memory_broke_00001"}
    r = api.client.post("/api/v1/memory/memories", json={"text": "never stored"}, headers=broke)
    assert r.status_code == 402, r.text
    assert r.json()["error"]["type"] == "budget_exceeded"
    listed = api.client.get("/api/v1/memory/namespaces/broke/memories", headers=api.admin)
    assert listed.json()["items"] == []


def test_bad_input_is_a_clear_400(api: Api) -> None:
    support = api.key("agent", agent="support")
    c = api.client
    assert c.post("/api/v1/memory/search", json={}, headers=support).status_code == 400
    r = c.post("/api/v1/memory/memories", json={"text": "x", "namespace": "bad name!"},
               headers=support)  # fmt: skip
    assert r.status_code in (400, 403)
    r = c.post("/api/v1/memory/search", json={"embedding": [0, 0, 0]}, headers=support)
    assert r.status_code == 400 and "zero vector" in r.json()["error"]["message"]
    assert c.post(
        "/api/v1/memory/search", json={"query": "x", "k": 0}, headers=support
    ).status_code in (400, 422)


def test_episodes_recall_similar_runs_and_their_steps(api: Api) -> None:
    from tests.store.test_episodes import _run

    _run(api.db, "run_ep_1", "support", "refund invoice INV-7 for acme", tools=("crm.lookup",))
    _run(api.db, "run_ep_2", "support", "reset the password for bob")
    support = api.key("agent", agent="support")
    r = api.client.get("/api/v1/memory/episodes",
                       params={"agent": "support", "task": "acme wants an invoice refund"},
                       headers=support)  # fmt: skip
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["episode"]["run_id"] for i in items] == ["run_ep_1"]
    assert items[0]["episode"]["tools"] == ["crm.lookup"]
    steps = api.client.get("/api/v1/memory/episodes/run_ep_1", headers=support).json()["items"]
    assert [s["name"] for s in steps] == ["crm.lookup"]
    billing = api.key("agent", agent="billing")
    r = api.client.get("/api/v1/memory/episodes", params={"agent": "support", "task": "x"},
                       headers=billing)  # fmt: skip
    assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_agent"
    assert api.client.get("/api/v1/memory/episodes/run_ep_1", headers=billing).status_code == 403


def test_a_namespace_with_a_local_model_embeds_without_any_llm_call(
    tmp_path: Path, db_url: str, db: Engine, mock_llm: MockServer
) -> None:
    settings = load_settings(
        home=tmp_path / "home-local", database_url=db_url,
        memory={"embedder": "gateway:mock-embed",
                "namespaces": {"support": {"embedder": "local:all-MiniLM-L6-v2"}}},
    )  # fmt: skip
    api = make_api(settings, db)
    with api.client:
        support = api.key("agent", agent="support")
        c = api.client
        before = len(mock_llm.requests)
        facts = ["the customer's cat needs a vet appointment", "invoice INV-9 is overdue",
                 "the office wifi password rotates monthly"]  # fmt: skip
        for text in facts:
            r = c.post("/api/v1/memory/memories", json={"text": text}, headers=support)
            assert r.status_code == 201, r.text
        # a paraphrase with no word in common: only a real sentence model finds it
        r = c.post("/api/v1/memory/search", json={"query": "booking a veterinarian for a kitten",
                                                  "k": 1}, headers=support)  # fmt: skip
        assert r.status_code == 200, r.text
        assert [h["memory"]["text"] for h in r.json()["items"]] == [facts[0]]
        assert len(mock_llm.requests) == before  # nothing went to a provider
        ns = c.get("/api/v1/memory/namespaces", headers=api.admin).json()["items"]
        assert {n["name"]: n["embedder"] for n in ns}["support"] == "local:all-MiniLM-L6-v2"
        # a misnamed local model is a clear error and writes nothing
        settings.memory.namespaces["support"].embedder = "local:no-such-model"
        r = c.post("/api/v1/memory/memories", json={"text": "lost"}, headers=support)
        assert r.status_code >= 400 and "local:no-such-model" in r.json()["error"]["message"]
        listed = c.get("/api/v1/memory/namespaces/support/memories", headers=support).json()
        assert "lost" not in [m["text"] for m in listed["items"]]
