"""Rollouts through the API on SQLite and PostgreSQL: start (a bad rule is a 400 naming its line,
nothing created), sticky routing, the rule rolling back on a guardrail, guarded transitions,
tasks forwarded to a version's endpoint; and `tether.route` in the SDK."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import tether
from tests.server.api_helpers import Api, make_api
from tests.store.evals_seed import insert_runs
from tether.config import Settings
from tether.demo.server import ThreadedServer, free_port
from tether.sdk._config import Sdk, new_provider, swap
from tether.sdk._http import Http
from tether.store.tables import audit_log


@pytest.fixture
def api(settings: Settings, db: Engine) -> Api:
    return make_api(settings, db)


def _runs(db: Engine, version: str, n: int, *, cost: int, status: str = "succeeded") -> None:
    now = datetime.now(UTC)
    rows = (
        {"id": f"run_{version}_{i}_{cost}", "agent": "bot", "version": version, "status": status,
         "started_at": now, "cost_nusd": cost}
        for i in range(n)
    )  # fmt: skip
    insert_runs(db, rows)


def test_start_route_guardrail_and_transitions(api: Api) -> None:
    c = api.client
    bad = c.post(
        "/api/v1/rollouts",
        headers=api.admin,
        json={
            "agent": "bot",
            "baseline": "v1",
            "candidate": "v2",
            "rule": "alpha: 0.05\nguardrails:\n  max_cost_per_task: 1\n",
            "rule_file": "r.yaml",
        },
    )
    assert bad.status_code == 400 and "r.yaml:3: guardrails.max_cost_per_task" in bad.text
    assert c.get("/api/v1/rollouts", headers=api.read).json()["items"] == []
    rule = "interval_s: 60\nguardrails: {max_cost_per_task_usd: 0.000001, min_tasks: 3}\n"
    ro = c.post(
        "/api/v1/rollouts",
        headers=api.admin,
        json={"agent": "bot", "baseline": "v1", "candidate": "v2", "percent": 30, "rule": rule},
    ).json()
    assert ro["status"] == "running" and [e["kind"] for e in ro["events"]] == ["started"]
    again = c.post(
        "/api/v1/rollouts",
        headers=api.admin,
        json={"agent": "bot", "baseline": "v1", "candidate": "v3"},
    )
    assert again.status_code == 409
    answers = {
        t: c.get("/api/v1/route", params={"agent": "bot", "task_id": t}, headers=api.read).json()[
            "version"
        ]
        for t in map(str, range(300))
    }
    assert set(answers.values()) == {"v1", "v2"}
    assert 0.15 < sum(v == "v2" for v in answers.values()) / 300 < 0.45
    assert all(
        c.get("/api/v1/route", params={"agent": "bot", "task_id": t}, headers=api.read).json()[
            "version"
        ]
        == v
        for t, v in list(answers.items())[:20]
    )
    nobody = c.get("/api/v1/route", params={"agent": "other", "task_id": "1"}, headers=api.read)
    assert nobody.json()["version"] is None

    _runs(api.db, "v1", 10, cost=100)
    _runs(api.db, "v2", 2, cost=5000)
    calm = c.post(f"/api/v1/rollouts/{ro['id']}/evaluate", headers=api.admin).json()
    assert calm["status"] == "running" and "collecting" in calm["decision"]["reason"]
    _runs(api.db, "v2", 2, cost=5001)
    done = c.post(f"/api/v1/rollouts/{ro['id']}/evaluate", headers=api.admin).json()
    assert (
        done["status"] == "rolled_back" and "guardrail: candidate cost per task" in done["reason"]
    )
    assert done["percent"] == 0
    v2 = next(a for a in done["arms"] if a["version"] == "v2")
    assert v2["success"]["total"] == 4 and v2["cost_per_task_usd"] == pytest.approx(
        5.0e-6
    )  # nano-dollars, floored
    assert all(
        c.get("/api/v1/route", params={"agent": "bot", "task_id": t}, headers=api.read).json()[
            "version"
        ]
        == "v1"
        for t in answers
    )
    late = c.post(f"/api/v1/rollouts/{ro['id']}/promote", headers=api.admin)
    assert late.status_code == 409 and "rolled_back" in late.json()["error"]["message"]
    with api.db.connect() as conn:
        actions = [a for (a,) in conn.execute(select(audit_log.c.action))]
    assert "rollout.started" in actions and "rollout.rolled_back" in actions
    ro2 = c.post(
        "/api/v1/rollouts",
        headers=api.admin,
        json={"agent": "bot", "baseline": "v1", "candidate": "v3", "percent": 5},
    ).json()
    assert (
        c.post(f"/api/v1/rollouts/{ro2['id']}/pause", headers=api.admin).json()["status"]
        == "paused"
    )
    assert (
        c.post(f"/api/v1/rollouts/{ro2['id']}/resume", headers=api.admin).json()["status"]
        == "running"
    )
    promoted = c.post(
        f"/api/v1/rollouts/{ro2['id']}/promote", headers=api.admin, json={"reason": "ship it"}
    ).json()
    assert (promoted["status"], promoted["percent"], promoted["reason"]) == (
        "promoted",
        100,
        "ship it",
    )
    assert c.post(f"/api/v1/rollouts/{ro2['id']}/pause", headers=api.read).status_code == 403


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def task(request: Request) -> JSONResponse:
        seen.append({"body": await request.json(), "run": request.headers["x-tether-run-id"]})
        return JSONResponse({"answer": "done"})

    server = ThreadedServer(
        Starlette(routes=[Route("/task", task, methods=["POST"])]), "127.0.0.1", free_port()
    )
    yield f"http://127.0.0.1:{server.server.config.port}/task", seen
    server.stop()


def test_tasks_are_forwarded_to_the_routed_versions_endpoint(
    api: Api, endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    url, seen = endpoint
    c = api.client
    assert (
        c.post("/api/v1/agents/bot/tasks", headers=api.admin, json={"input": "x"}).status_code
        == 404
    )
    c.post(
        "/api/v1/rollouts",
        headers=api.admin,
        json={"agent": "bot", "baseline": "v1", "candidate": "v2", "percent": 50},
    )
    for v in ("v1", "v2"):
        assert (
            c.put(
                f"/api/v1/agents/bot/versions/{v}/endpoint", headers=api.admin, json={"url": url}
            ).status_code
            == 200
        )
    assert (
        c.put(
            "/api/v1/agents/bot/versions/v9/endpoint", headers=api.admin, json={"url": "ftp://x"}
        ).status_code
        == 400
    )
    out = c.post(
        "/api/v1/agents/bot/tasks", headers=api.admin, json={"task_id": "T-1", "input": {"q": 1}}
    ).json()
    routed = c.get(
        "/api/v1/route", params={"agent": "bot", "task_id": "T-1"}, headers=api.read
    ).json()["version"]
    assert out["version"] == routed and out["response"] == {"answer": "done"}
    assert seen == [
        {
            "body": {"task_id": "T-1", "input": {"q": 1}, "run_id": out["run_id"]},
            "run": out["run_id"],
        }
    ]
    run = c.get(f"/api/v1/runs/{out['run_id']}", headers=api.read).json()
    assert (run["agent"], run["version"], run["task_id"], run["status"]) == (
        "bot",
        routed,
        "T-1",
        "succeeded",
    )

    # the SDK asks the same route; unreachable tether means the caller's default
    def relay(request: httpx.Request) -> httpx.Response:  # the SDK's requests into the app
        r = c.request(
            request.method,
            request.url.path,
            params=request.url.params,
            headers=dict(request.headers),
        )
        return httpx.Response(r.status_code, content=r.content, headers=r.headers)

    http = Http(
        "http://testserver", api.admin["Authorization"][7:], transport=httpx.MockTransport(relay)
    )
    old = swap(Sdk("http://testserver", None, new_provider({}), http))
    try:
        assert tether.route("bot", "T-1") == routed
        assert tether.route("nobody", "T-1", default="v1") == "v1"
    finally:
        swap(old)
    dead = Http(f"http://127.0.0.1:{free_port()}", None)
    old = swap(Sdk("x", None, new_provider({}), dead))
    try:
        assert tether.route("bot", "T-1", default="v0") == "v0"
    finally:
        swap(old)
