"""Rollouts against `tether serve`: every state change reaches the configured webhooks, as JSON
and as Slack messages, and the scheduled rule loop acts on its own: a kill in the candidate rolls
the rollout back at the first evaluation after it, and a rollout past its maximum duration stops
as inconclusive."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import ServerProcess
from tether.demo.server import ThreadedServer, free_port
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade

WAIT_S = 60.0  # generous: the machine may be loaded; the rule itself runs every 0.5 s


@dataclass
class Hooks:
    """A webhook receiver: what arrived at /json and at /slack."""

    json: list[dict[str, Any]] = field(default_factory=list)
    slack: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def receive(request: Request) -> JSONResponse:
            body = await request.json()
            with self.lock:
                (self.slack if request.url.path == "/slack" else self.json).append(body)
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route(p, receive, methods=["POST"]) for p in ("/json", "/slack")])

    def kinds(self, rollout_id: str) -> list[str]:
        with self.lock:
            return [e["type"] for e in self.json if e["rollout"]["id"] == rollout_id]

    def texts(self, rollout_id: str) -> list[str]:
        with self.lock:
            return [m["text"] for m in self.slack if rollout_id in m["text"]]


@dataclass
class Env:
    api: httpx.Client
    hooks: Hooks


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("rollouts")
    hooks = Hooks()
    receiver = ThreadedServer(hooks.app(), "127.0.0.1", free_port())
    base = f"http://127.0.0.1:{receiver.server.config.port}"
    config = tmp / "tether.yaml"
    config.write_text(
        json.dumps({"webhooks": [{"url": f"{base}/json"}, {"url": f"{base}/slack",
                                                           "format": "slack"}]})
    )  # fmt: skip
    db_url = f"sqlite:///{tmp / 'tether.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    _, admin = create_key(engine, scopes="admin", name="admin")
    engine.dispose()
    proc = ServerProcess(tmp / "home", db_url, config=config)
    api = httpx.Client(
        base_url=proc.url + "/api/v1", timeout=30, headers={"Authorization": f"Bearer {admin}"}
    )
    try:
        yield Env(api, hooks)
    finally:
        api.close()
        proc.stop()
        receiver.stop()


def _until(what: str, check: Any) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {WAIT_S:g} s: {what}")


def _start(env: Env, agent: str, rule: str) -> dict[str, Any]:
    body = {"agent": agent, "baseline": "v1", "candidate": "v2", "percent": 10, "rule": rule}
    resp = env.api.post("/rollouts", json=body)
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()
    return out


def test_a_kill_rolls_back_at_the_next_evaluation_and_every_change_is_announced(env: Env) -> None:
    ro = _start(env, "bot", "interval_s: 0.5\nguardrails: {max_kills: 0}\n")
    rid = ro["id"]
    assert env.api.post(f"/rollouts/{rid}/pause", json={"reason": "lunch"}).status_code == 200
    assert env.api.post(f"/rollouts/{rid}/resume", json={"reason": "back"}).status_code == 200
    # the loop keeps evaluating ("collecting") while nothing is wrong
    _until("a first evaluation", lambda: (env.api.get(f"/rollouts/{rid}").json()["decision"]
                                          or {}).get("action") == "continue")  # fmt: skip
    run = env.api.post("/runs", json={"agent": "bot", "version": "v2", "task_id": "t-1"}).json()
    killed_at = time.monotonic()
    assert env.api.post(f"/runs/{run['id']}/kill", json={"reason": "runaway"}).status_code == 200
    seen: list[dict[str, Any]] = []

    def rolled_back() -> bool:
        now = env.api.get(f"/rollouts/{rid}").json()
        seen.append(now)
        return bool(now["status"] == "rolled_back")

    _until("the guardrail's rollback", rolled_back)
    took = time.monotonic() - killed_at
    final = seen[-1]
    assert final["reason"] == "guardrail: 1 candidate run(s) killed (the rule allows 0)"
    assert final["percent"] == 0
    # no evaluation after the kill kept collecting: the first one after it acted
    kill_at = env.api.get(f"/runs/{run['id']}").json()["ended_at"]
    late = [d for s in seen if (d := s["decision"]) and d["action"] == "continue"
            and d["at"] > kill_at]  # fmt: skip
    assert late == [] and final["decision"]["at"] >= kill_at
    assert took < WAIT_S
    kinds = _until("four webhook events", lambda: (k := env.hooks.kinds(rid)) and len(k) >= 4
                   and k)  # fmt: skip
    assert kinds == ["rollout.started", "rollout.paused", "rollout.resumed", "rollout.rolled_back"]
    event = next(e for e in env.hooks.json if e["type"] == "rollout.rolled_back")
    assert event["actor"] == "rollout-rule" and event["rollout"]["status"] == "rolled_back"
    texts = _until("four Slack messages", lambda: len(t := env.hooks.texts(rid)) >= 4 and t)
    assert "rolled back at 0 % - guardrail: 1 candidate run(s) killed" in texts[-1]
    assert texts[0].endswith("started at 10 % - started at 10 %")


def test_promote_and_an_inconclusive_stop_are_announced(env: Env) -> None:
    promoted = _start(env, "bot-p", "interval_s: 60\n")
    assert env.api.post(f"/rollouts/{promoted['id']}/promote", json={"reason": "ok"}).is_success
    stopped = _start(env, "bot-i", "interval_s: 0.5\nmax_duration_s: 1\n")
    _until("the loop's inconclusive stop", lambda: env.api.get(
        f"/rollouts/{stopped['id']}").json()["status"] == "inconclusive")  # fmt: skip
    assert _until("promote announced", lambda: env.hooks.kinds(promoted["id"])[-1:] == [
        "rollout.promoted"])  # fmt: skip
    assert _until("stop announced", lambda: env.hooks.kinds(stopped["id"])[-1:] == [
        "rollout.inconclusive"])  # fmt: skip
    text = _until("stop on Slack", lambda: env.hooks.texts(stopped["id"])[1:])
    assert "inconclusive" in text[0] and "without a significant difference" in text[0]
