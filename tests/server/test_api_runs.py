from __future__ import annotations

import pytest
from sqlalchemy import Engine

from tests.server.api_helpers import Api, make_api
from tests.store.test_runs import make_run
from tether.config import Settings


@pytest.fixture
def api(settings: Settings, db: Engine) -> Api:
    return make_api(settings, db)


def test_list_runs_shape_and_complete_pagination(api: Api) -> None:
    ids = [make_run(api.db, i, cost=1_500_000_000 if i == 2 else 1000) for i in range(5)]
    r = api.client.get("/api/v1/runs", params={"limit": 2}, headers=api.read)
    assert r.status_code == 200
    body = r.json()
    run = body["items"][0]
    assert set(run) >= {
        "id", "task_id", "agent", "version", "user", "status", "started_at", "ended_at", "input",
        "output", "input_tokens", "output_tokens", "cost_usd", "llm_calls", "tool_calls",
        "error", "score", "feedback"}  # fmt: skip
    assert run["id"] == ids[-1] and run["cost_usd"] == 1e-6 and run["duration_ms"] == 5000
    assert run["feedback"] == {"thumbs_up": 0, "thumbs_down": 0, "comments": []}
    seen, cursor = [x["id"] for x in body["items"]], body["next_cursor"]
    while cursor:
        page = api.client.get("/api/v1/runs", params={"limit": 2, "cursor": cursor},
                              headers=api.read).json()  # fmt: skip
        seen += [x["id"] for x in page["items"]]
        cursor = page["next_cursor"]
    assert seen == ids[::-1]
    top = api.client.get("/api/v1/runs", params={"sort": "-cost", "limit": 1},
                         headers=api.read).json()  # fmt: skip
    assert top["items"][0]["cost_usd"] == 1.5


def test_filters_as_query_params(api: Api) -> None:
    a = make_run(api.db, 1, agent="triage", user="alice")
    make_run(api.db, 2, agent="writer", user="bob", status="error")
    params = {"agent": "triage", "status": "succeeded", "user": "alice",
              "started_after": "2026-11-25T11:00:00", "max_cost_usd": "1"}  # fmt: skip
    r = api.client.get("/api/v1/runs", params=params, headers=api.read)
    assert [x["id"] for x in r.json()["items"]] == [a]
    r = api.client.get("/api/v1/runs", params={"q": "writ"}, headers=api.read)
    assert [x["agent"] for x in r.json()["items"]] == ["writer"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 501}, "limit"), ({"sort": "name"}, "sort"), ({"status": "done"}, "status"),
     ({"cursor": "garbage"}, "cursor"), ({"started_after": "yesterday"}, "started_after"),
     ({"min_cost_usd": "-1"}, "min_cost_usd"), ({"min_cost_usd": "1e999999"}, "min_cost_usd"),
     ({"max_cost_usd": "1e30"}, "max_cost_usd")],
)  # fmt: skip
def test_bad_input_is_400_naming_the_field(api: Api, params: dict[str, object], field: str) -> None:
    r = api.client.get("/api/v1/runs", params=params, headers=api.read)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request" and field in err["message"]


def test_run_detail_has_span_tree_and_unknown_run_is_404(api: Api) -> None:
    rid = make_run(api.db, 1)
    r = api.client.get(f"/api/v1/runs/{rid}", headers=api.read)
    assert r.status_code == 200
    spans = r.json()["spans"]
    assert [s["kind"] for s in spans] == ["agent"]
    child = spans[0]["children"][0]
    assert (child["kind"], child["model"], child["cost_usd"], child["latency_ms"]) == (
        "llm",
        "gpt-4o-mini",
        1e-6,
        1000.0,
    )
    flat = api.client.get(f"/api/v1/runs/{rid}/spans", headers=api.read).json()
    assert [s["kind"] for s in flat["items"]] == ["agent", "llm"]
    only_llm = api.client.get("/api/v1/spans", params={"run_id": rid, "kind": "llm"},
                              headers=api.read).json()  # fmt: skip
    assert [s["span_id"] for s in only_llm["items"]] == [child["span_id"]]
    for path in ("/api/v1/runs/run_nope", "/api/v1/runs/run_nope/spans"):
        r = api.client.get(path, headers=api.read)
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"


def test_create_run(api: Api) -> None:
    r = api.client.post("/api/v1/runs", json={"task_id": "T-1", "user": "alice",
                        "input": {"invoice": 7}}, headers=api.triage)  # fmt: skip
    assert r.status_code == 201
    run = r.json()
    assert run["id"].startswith("run_") and run["agent"] == "triage"
    assert (run["status"], run["input"], run["spans"]) == ("running", '{"invoice": 7}', [])
    again = api.client.post("/api/v1/runs", json={"id": run["id"]}, headers=api.triage)
    assert again.status_code == 409
    named = api.client.post("/api/v1/runs", json={"id": "run_mine", "agent": "x"},
                            headers=api.admin)  # fmt: skip
    assert named.status_code == 201 and named.json()["agent"] == "x"
    other = api.client.post("/api/v1/runs", json={"agent": "writer"}, headers=api.triage)
    assert other.status_code == 403
    assert api.client.post("/api/v1/runs", json={}, headers=api.read).status_code == 403
    bad = api.client.post("/api/v1/runs", json={"id": "no spaces"}, headers=api.admin)
    assert bad.status_code == 400 and "id" in bad.json()["error"]["message"]
    extra = api.client.post("/api/v1/runs", json={"agnet": "x"}, headers=api.admin)
    assert extra.status_code == 400 and "agnet" in extra.json()["error"]["message"]


def test_reads_need_a_key_with_read_scope(api: Api) -> None:
    assert api.client.get("/api/v1/runs").status_code == 401
    bad = {"Authorization": "Bearer tth_nope"}
    assert api.client.get("/api/v1/runs", headers=bad).status_code == 401
    ingest_only = api.key("ingest")
    r = api.client.get("/api/v1/runs", headers=ingest_only)
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_denied"
    assert api.client.get("/api/v1/runs", headers=api.admin).status_code == 200


def test_openapi_documents_the_routes(api: Api) -> None:
    spec = api.client.get("/api/v1/openapi.json").json()
    get_runs = spec["paths"]["/api/v1/runs"]["get"]
    assert get_runs["summary"] == "List runs"
    assert {p["name"] for p in get_runs["parameters"]} >= {"agent", "cursor", "sort", "q"}
    assert "Run" in spec["components"]["schemas"]


def test_an_audit_cursor_too_large_for_the_column_is_400(api: Api) -> None:
    for cursor in ("99999999999999999999999", "\u00b2"):
        r = api.client.get("/api/v1/audit", params={"cursor": cursor}, headers=api.admin)
        assert r.status_code == 400 and "cursor" in r.json()["error"]["message"]
