from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from tests.ops.promtext import value
from tests.server.api_helpers import Api, make_api
from tests.store.test_runs import T0, make_run
from tether.config import Settings

USD = 1_000_000_000
RANGE = {"from": "2026-11-20T00:00:00Z", "to": "2026-12-01T00:00:00Z"}


@pytest.fixture
def api(settings: Settings, db: Engine) -> Api:
    api = make_api(settings, db)
    make_run(db, 1, agent="triage", version="v1", cost=USD // 2)
    make_run(db, 2, agent="triage", version="v1", cost=3 * USD)
    make_run(db, 3, agent="writer", version="v1", cost=USD // 4, start=T0 + timedelta(days=1))
    return api


def test_costs_by_day_and_agent(api: Api) -> None:
    r = api.client.get("/api/v1/costs", params={"group_by": "day", **RANGE}, headers=api.read)
    assert r.status_code == 200
    body = r.json()
    assert body["total_cost_usd"] == 3.75
    assert [(x["key"], x["cost_usd"], x["runs"]) for x in body["items"]] == [
        ("2026-11-25", 3.5, 2),
        ("2026-11-26", 0.25, 1),
    ]
    by_agent = api.client.get("/api/v1/costs", params={"group_by": "agent", **RANGE},
                              headers=api.read).json()  # fmt: skip
    assert [(x["key"], x["cost_usd"]) for x in by_agent["items"]] == [
        ("triage", 3.5),
        ("writer", 0.25),
    ]
    bad = api.client.get("/api/v1/costs", params={"group_by": "team"}, headers=api.read)
    assert bad.status_code == 400 and "group_by" in bad.json()["error"]["message"]
    backwards = api.client.get("/api/v1/costs", params={"from": RANGE["to"], "to": RANGE["from"]},
                               headers=api.read)  # fmt: skip
    assert backwards.status_code == 400


def test_top_n_tasks_and_users_rank_all_groups_and_count_them(api: Api, db: Engine) -> None:
    # besides the fixture's three runs (tasks T-1..T-3, users alice): more tasks and users,
    # one run after the range's end (not counted)
    make_run(db, 4, user="bob", task="T-big", cost=2 * USD)
    make_run(db, 5, user="bob", task="T-big", cost=USD)
    make_run(db, 6, user="carol", task="T-small", cost=USD // 10)
    make_run(db, 7, user="dave", task="T-late", cost=9 * USD, start=T0 + timedelta(days=30))
    for group, expected in (
        ("task", [("T-2", 3.0), ("T-big", 3.0)]),  # ties by key
        ("user", [("alice", 3.75), ("bob", 3.0)]),
    ):
        top = api.client.get("/api/v1/costs", params={"group_by": group, "limit": 2, **RANGE},
                             headers=api.read).json()  # fmt: skip
        full = api.client.get("/api/v1/costs", params={"group_by": group, **RANGE},
                              headers=api.read).json()  # fmt: skip
        assert [(x["key"], x["cost_usd"]) for x in top["items"]] == expected
        assert top["items"] == full["items"][:2]  # the same rows as the whole breakdown
        assert top["groups"] == full["groups"] == len(full["items"])
        assert top["total_cost_usd"] == full["total_cost_usd"] == 6.85
    by_agent = api.client.get("/api/v1/costs", params={"group_by": "task", "limit": 1,
                                                       "agent": "writer", **RANGE},
                              headers=api.read).json()  # fmt: skip
    assert [x["key"] for x in by_agent["items"]] == ["T-3"] and by_agent["groups"] == 1
    for bad in ({"group_by": "agent", "limit": 3}, {"group_by": "task", "limit": 0}):
        refused = api.client.get("/api/v1/costs", params={**bad, **RANGE}, headers=api.read)
        assert refused.status_code == 400, refused.text
        assert "limit" in refused.json()["error"]["message"]


def test_kpi_success_rate_at_target_cost(api: Api) -> None:
    r = api.client.get("/api/v1/kpi", params={"target_cost_usd": "1", **RANGE}, headers=api.read)
    assert r.status_code == 200
    rows = {(x["agent"], x["version"]): x for x in r.json()["items"]}
    triage = rows["triage", "v1"]
    assert (triage["successes"], triage["total"], triage["rate"]) == (1, 2, 0.5)
    assert triage["target_cost_usd"] == 1.0 and triage["target_source"] == "query"
    assert 0 < triage["low"] < 0.5 < triage["high"] < 1
    plain = api.client.get("/api/v1/kpi", params=RANGE, headers=api.read).json()["items"]
    assert {x["target_source"] for x in plain} == {None}


def test_agents(api: Api) -> None:
    items = api.client.get("/api/v1/agents", headers=api.read).json()["items"]
    assert [(a["name"], a["runs"], a["cost_usd"]) for a in items] == [
        ("triage", 2, 3.5),
        ("writer", 1, 0.25),
    ]
    one = api.client.get("/api/v1/agents/triage", headers=api.read).json()
    assert one["versions"][0]["version"] == "v1" and one["versions"][0]["cost_usd"] == 3.5
    assert api.client.get("/api/v1/agents/nobody", headers=api.read).status_code == 404


def test_metrics_in_prometheus_text_format(api: Api) -> None:
    assert api.client.get("/metrics").status_code == 401
    r = api.client.get("/metrics", headers=api.read)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert value(text, "tether_runs", agent="triage", version="v1", status="succeeded") == 2
    labels = {"agent": "triage", "version": "v1", "user": "alice", "model": "gpt-4o-mini"}
    assert value(text, "tether_tokens_total", **labels, direction="input") == 200
    assert value(text, "tether_cost_usd_total", **labels) == 3.5
    assert "# TYPE tether_cost_usd_total counter" in text.splitlines()
