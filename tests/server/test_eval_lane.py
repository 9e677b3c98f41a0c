"""The API lane (server/lane.py) with an eval attempt's finish (server/eval_lane.py): it answers
the finishes it takes as they are as the router does (same writes, same body, same errors), and
leaves everything else to the app behind it unchanged, body and all, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.server.test_checkpoint_lane import Behind, call
from tether.config import load_settings
from tether.server.app import create_app
from tether.server.deps import State
from tether.server.eval_lane import ROUTES
from tether.server.lane import Lane
from tether.store.keys import create_key

SUITE = """\
suite: lane
agent: bot
repeats: 3
tasks:
  - id: t1
    input: answer
    assert:
      - {name: answered, output_contains: question}
"""


@pytest.fixture
def app(tmp_path: Path, db_url: str, db: Engine) -> Iterator[TestClient]:
    settings = load_settings(home=tmp_path / "home", database_url=db_url)
    with TestClient(create_app(settings, engine=db)) as client:
        yield client


def _key(client: TestClient, scopes: str = "admin") -> str:
    """A new key, looked up (and so in the key cache) by one request through FastAPI."""
    state: State = client.app.state.tether  # type: ignore[attr-defined]
    _, key = create_key(state.engine, scopes=scopes, agent=None if "admin" in scopes else "bot")
    client.get("/api/v1/evals", headers={"Authorization": f"Bearer {key}"})
    return key


def _eval(client: TestClient, key: str) -> str:
    made = client.post("/api/v1/evals", json={"source": SUITE, "version": "v1"},
                       headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def _finish(client: TestClient, key: str, path: str, body: Any) -> tuple[int, Any]:
    got = client.post("/api/v1" + path, json=body, headers={"Authorization": f"Bearer {key}"})
    return got.status_code, got.json()


def test_the_lane_answers_a_finish_as_the_router_does(app: TestClient) -> None:
    state: State = app.app.state.tether  # type: ignore[attr-defined]
    lane = Lane(Behind(), state, ROUTES)
    key = _key(app)
    eval_id = _eval(app, key)
    fin = f"/evals/{eval_id}/attempts/t1"
    # attempt 0 through the router (a key the cache does not hold yet goes to FastAPI)
    _, fresh = create_key(state.engine, scopes="admin")
    start = app.post(f"/api/v1/evals/{eval_id}/attempts", json={"task_id": "t1", "attempt": 0},
                     headers={"Authorization": f"Bearer {fresh}"})  # fmt: skip
    run0 = start.json()["run_id"]
    body = {"ok": True, "output": "a question", "run_id": run0, "next": {"task_id": "t1",
            "attempt": 1}}  # fmt: skip
    _, fresh = create_key(state.engine, scopes="admin")
    status, routed = _finish(app, fresh, f"{fin}/0/finish", body)
    assert status == 200, routed
    # attempt 1, which that finish started, through the lane alone
    run1 = routed["next"]["run_id"]
    body = {"ok": True, "output": "no", "run_id": run1, "next": {"task_id": "t1", "attempt": 2}}
    status, laned = call(lane, "POST", f"{fin}/1/finish", key=key, body=body)
    assert status == 200, laned
    assert lane.app.seen == []  # type: ignore[attr-defined]
    assert laned.keys() == routed.keys() and laned["next"].keys() == routed["next"].keys()
    assert (routed["passed"], laned["passed"]) == (True, False)
    assert laned["attempt"] == 1 and laned["run_id"] == run1 and laned["status"] == "done"
    assert laned["next"]["attempt"] == 2 and laned["next"]["status"] == "running"
    stored = app.get(f"/api/v1/evals/{eval_id}", headers={"Authorization": f"Bearer {key}"})
    by_attempt = {a["attempt"]: a for a in stored.json()["attempts"]}
    assert by_attempt[1] == {k: v for k, v in laned.items() if k in by_attempt[1]}
    assert by_attempt[2]["run_id"] == laned["next"]["run_id"]
    # the endpoint's errors, worded as the router words them
    for path, bad in [
        (f"{fin}/1/finish", {"ok": True, "run_id": run1}),  # done already
        ("/evals/ev_nope/attempts/t1/0/finish", {"ok": True}),
        (f"{fin}/0/finish", {"ok": True, "run_id": run0, "next": {"task_id": "t9", "attempt": 0}}),
        (f"{fin}/0/finish", {"ok": True, "run_id": run0, "next": {"task_id": "t1", "attempt": 3}}),
    ]:
        _, fresh = create_key(state.engine, scopes="admin")
        want = _finish(app, fresh, path, bad)
        assert want[0] >= 400
        assert call(lane, "POST", path, key=key, body=bad) == want, (path, bad)
    assert lane.app.seen == []  # type: ignore[attr-defined]


def test_leaves_the_rest_to_the_app_unchanged(app: TestClient) -> None:
    state: State = app.app.state.tether  # type: ignore[attr-defined]
    behind = Behind()
    lane = Lane(behind, state, ROUTES)
    key = _key(app)
    reader = _key(app, "read")
    _, unknown = create_key(state.engine, scopes="admin")  # not looked up yet
    eval_id = _eval(app, key)
    fin = f"/evals/{eval_id}/attempts/t1"
    body = {"ok": True}
    cases = [
        ("POST", f"{fin}/0/finish", {"key": unknown, "body": body}),  # not in the key cache
        ("POST", f"{fin}/0/finish", {"key": None, "body": body}),
        ("POST", f"{fin}/0/finish", {"key": reader, "body": body}),  # lacks the scope
        ("POST", f"{fin}/0/finish", {"key": key, "body": {"ok": True, "x": 1}}),  # refused
        ("POST", f"{fin}/0/finish", {"key": key, "body": b"{not json"}),
        ("POST", f"{fin}/0/finish", {"key": key, "body": body, "content_type": "text/plain"}),
        ("POST", f"{fin}/01/finish", {"key": key, "body": body}),  # FastAPI reads the number
        ("POST", f"{fin}/-1/finish", {"key": key, "body": body}),
        ("POST", f"{fin}/10001/finish", {"key": key, "body": body}),
        ("POST", f"{fin}/x/finish", {"key": key, "body": body}),
        ("POST", f"{fin}//finish", {"key": key, "body": body}),
        ("POST", f"{fin}/0/finish/", {"key": key, "body": body}),
        ("GET", f"{fin}/0/finish", {"key": key}),
        ("POST", f"/evals/{eval_id}/finish", {"key": key, "body": body}),  # another route
    ]
    for method, path, kw in cases:
        behind.seen.clear()
        assert call(lane, method, path, **kw)[0] == 599, (method, path, kw)
        raw = kw.get("body")
        sent = raw if isinstance(raw, bytes) else json.dumps(raw).encode() if raw else b""
        assert behind.seen == [(method, "/api/v1" + path, sent)]
    # nothing was stored on the way
    got = app.get(f"/api/v1/evals/{eval_id}", headers={"Authorization": f"Bearer {key}"})
    assert got.json()["attempts"] == []
