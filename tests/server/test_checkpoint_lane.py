"""The API lane (server/lane.py) with the checkpoint routes (server/checkpoint_lane.py)
answers put, put_writes and get_tuple itself when it takes them as they are, with the router's
answers; everything else reaches the app behind it unchanged, body and all, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from sqlalchemy import Engine

from tether.config import Settings
from tether.server.app import create_app
from tether.server.auth import authenticate
from tether.server.checkpoint_lane import ROUTES
from tether.server.deps import State
from tether.server.lane import Lane
from tether.store.keys import create_key

B64 = base64.b64encode(b"\x80").decode()


class Behind:
    """The app behind the lane: records what reaches it and answers 599."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.seen.append((scope["method"], scope["path"], body))
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def call(
    lane: Lane,
    method: str,
    path: str,
    *,
    key: str | None,
    body: Any = None,
    query: str = "",
    content_type: str = "application/json",
) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body else b""
    headers = [(b"content-type", content_type.encode())]
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {"type": "http", "method": method, "path": "/api/v1" + path, "headers": headers,
             "query_string": query.encode(), "asgi": {"version": "3.0"}}  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(lane(scope, receive, send))
    status = sent[0]["status"]
    text = b"".join(m.get("body", b"") for m in sent[1:])
    return status, json.loads(text) if text else None


def checkpoint(thread: str, cid: str) -> dict[str, Any]:
    return {"thread_id": thread, "checkpoint_id": cid, "type": "msgpack", "data": B64,
            "versions": {"step": "1"}, "metadata": {"source": "loop", "step": 1},
            "blobs": [{"channel": "step", "version": "1", "type": "msgpack", "data": B64}],
            "run": {"max_iterations": 10}}  # fmt: skip


@pytest.fixture
def state(settings: Settings, db: Engine) -> State:
    app = create_app(settings, engine=db)
    got: State = app.state.tether
    return got


def known_key(state: State, scopes: str, agent: str | None) -> str:
    """A key the lane may take: looked up once, as `require` does on a first request."""
    _, key = create_key(state.engine, scopes=scopes, agent=agent)
    authenticate(state, key)
    return key


def test_takes_put_writes_and_get_tuple_as_the_router_answers(state: State) -> None:
    behind = Behind()
    lane = Lane(behind, state, ROUTES)
    key = known_key(state, "agent", "a1")
    status, out = call(lane, "POST", "/checkpoints", key=key, body=checkpoint("t1", "0001"))
    assert status == 200 and out["checkpoint_id"] == "0001" and out["run_id"].startswith("run_")
    write = {"idx": 0, "channel": "step", "type": "msgpack", "data": B64}
    writes = {"thread_id": "t1", "checkpoint_id": "0001", "task_id": "task", "writes": [write]}
    assert call(lane, "POST", "/checkpoints/writes", key=key, body=writes) == (204, None)
    status, got = call(lane, "GET", "/checkpoints/tuple", key=key, query="thread_id=t1")
    assert status == 200 and got["checkpoint_id"] == "0001" and got["run_id"] == out["run_id"]
    assert [w["channel"] for w in got["writes"]] == ["step"] and got["blobs"][0]["data"] == B64
    # errors of the endpoint are rendered as server/errors.py renders them
    status, err = call(lane, "GET", "/checkpoints/tuple", key=key, query="thread_id=nope")
    assert status == 404 and err["error"]["type"] == "not_found"
    other = known_key(state, "agent", "a2")
    status, err = call(lane, "POST", "/checkpoints", key=other, body=checkpoint("t1", "0002"))
    assert status == 403 and err["error"]["code"] == "wrong_agent"
    assert behind.seen == []


def test_leaves_the_rest_to_the_app_unchanged(state: State) -> None:
    behind = Behind()
    lane = Lane(behind, state, ROUTES)
    key = known_key(state, "agent", "a1")
    reader = known_key(state, "read", None)
    _, unknown = create_key(state.engine, scopes="agent", agent="a1")  # not looked up yet
    body = checkpoint("t1", "0001")
    cases = [
        ("POST", "/checkpoints", {"key": unknown, "body": body}),  # not in the key cache
        ("POST", "/checkpoints", {"key": None, "body": body}),
        ("POST", "/checkpoints", {"key": reader, "body": body}),  # lacks the scope
        ("POST", "/checkpoints", {"key": key, "body": {**body, "extra": 1}}),  # the model refuses
        ("POST", "/checkpoints", {"key": key, "body": b"{not json"}),
        ("POST", "/checkpoints", {"key": key, "body": body, "content_type": "text/plain"}),
        ("GET", "/checkpoints/tuple", {"key": key, "query": "thread_id=t1&thread_id=t2"}),
        ("GET", "/checkpoints/tuple", {"key": key, "query": "checkpoint_ns="}),
        ("GET", "/checkpoints/tuple", {"key": key, "query": "thread_id=" + "x" * 201}),
        ("GET", "/checkpoints", {"key": key}),  # not one of the three
    ]
    for method, path, kw in cases:
        behind.seen.clear()
        assert call(lane, method, path, **kw)[0] == 599, (method, path, kw)
        raw = kw.get("body")
        sent = raw if isinstance(raw, bytes) else json.dumps(raw).encode() if raw else b""
        assert behind.seen == [(method, "/api/v1" + path, sent)]
    # nothing was stored on the way
    status, _ = call(lane, "GET", "/checkpoints/tuple", key=key, query="thread_id=t1")
    assert status == 404
