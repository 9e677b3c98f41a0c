from __future__ import annotations

import pytest
from sqlalchemy import Engine

from tests.server.api_helpers import Api, make_api
from tests.store.test_runs import make_run
from tether.config import Settings


@pytest.fixture
def api(settings: Settings, db: Engine) -> Api:
    return make_api(settings, db)


def test_feedback_and_scores_reach_the_run(api: Api) -> None:
    rid = make_run(api.db, 1, agent="triage")
    up = api.client.post(f"/api/v1/runs/{rid}/feedback", json={"kind": "thumbs", "value": 1},
                         headers=api.triage)  # fmt: skip
    assert up.status_code == 201 and up.json()["user"].startswith("key:key_")
    note = api.client.post(
        f"/api/v1/runs/{rid}/feedback",
        headers=api.admin,
        json={"kind": "comment", "comment": "wrong PO", "user": "alice"},
    )
    assert note.status_code == 201
    score = api.client.post(
        f"/api/v1/runs/{rid}/scores",
        headers=api.triage,
        json={"name": "accuracy", "value": 0.8, "source": "eval"},
    )
    assert score.status_code == 201 and score.json()["source"] == "eval"
    run = api.client.get(f"/api/v1/runs/{rid}", headers=api.read).json()
    assert run["score"] == 0.8
    assert run["feedback"]["thumbs_up"] == 1
    assert run["feedback"]["comments"][0]["comment"] == "wrong PO"
    assert run["feedback"]["comments"][0]["user"] == "alice"
    listed = api.client.get(f"/api/v1/runs/{rid}/feedback", headers=api.read).json()
    assert [f["kind"] for f in listed["feedback"]] == ["thumbs", "comment"]
    assert [s["name"] for s in listed["scores"]] == ["accuracy"]


def test_agent_keys_write_only_on_their_own_runs(api: Api) -> None:
    other = make_run(api.db, 1, agent="writer")
    r = api.client.post(f"/api/v1/runs/{other}/scores", json={"name": "x", "value": 1},
                        headers=api.triage)  # fmt: skip
    assert r.status_code == 403
    r = api.client.post(f"/api/v1/runs/{other}/feedback", json={"kind": "thumbs", "value": 1},
                        headers=api.read)  # fmt: skip
    assert r.status_code == 403
    listed = api.client.get(f"/api/v1/runs/{other}/feedback", headers=api.read).json()
    assert listed == {"feedback": [], "scores": []}


@pytest.mark.parametrize(
    ("body", "field"),
    [({"kind": "thumbs", "value": 3}, "value"), ({"kind": "stars", "value": 1}, "kind"),
     ({"kind": "score", "value": 4}, "value"), ({"kind": "comment"}, "comment")],
)  # fmt: skip
def test_bad_feedback_is_400(api: Api, body: dict[str, object], field: str) -> None:
    rid = make_run(api.db, 1, agent="triage")
    r = api.client.post(f"/api/v1/runs/{rid}/feedback", json=body, headers=api.admin)
    assert r.status_code == 400 and field in r.json()["error"]["message"]


def test_unknown_run_is_404(api: Api) -> None:
    for path, body in (("feedback", {"kind": "thumbs", "value": 1}),
                       ("scores", {"name": "x", "value": 1})):  # fmt: skip
        r = api.client.post(f"/api/v1/runs/run_nope/{path}", json=body, headers=api.admin)
        assert r.status_code == 404
