"""An eval attempt's finish over the API, on SQLite and PostgreSQL: it stores the gateway's spans
of the attempt still queued in the LLM gateway's writer in its own transaction, so the check sees
exactly what the gateway recorded (nothing stored twice, nothing lost when the finish fails), and
it starts the runner's next attempt in the same request."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from tests.e2e.mock_upstream import mock_provider
from tether.config import load_settings
from tether.core.errors import NotFoundError
from tether.core.principal import Principal
from tether.core.records import RunAttribution, SpanRecord
from tether.demo.server import ThreadedServer, free_port
from tether.gateway.llm.mock import create_mock_app
from tether.server.app import create_app
from tether.server.deps import State
from tether.server.routes.evals import AttemptFinish, AttemptStart, finish_attempt
from tether.store.keys import create_key
from tether.store.tables import eval_attempts, runs, spans

ADMIN = Principal("key_test", frozenset({"admin"}), None)
SUITE = """\
suite: finish
agent: bot
repeats: 2
tasks:
  - id: t1
    input: look up ada
    assert:
      - {name: looked up, tool_called: crm.lookup}
      - {name: one call, max_llm_calls: 1}
      - {name: cheap, max_cost_usd: 0.5}
  - id: t2
    input: answer
    assert:
      - {name: answered, output_contains: question}
"""


@dataclass
class Env:
    client: TestClient
    state: State
    db: Engine
    admin: dict[str, str]
    agent: dict[str, str]

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post("/api/v1" + path, headers=self.admin, **kw)


@pytest.fixture
def env(tmp_path: Path, db_url: str, db: Engine) -> Iterator[Env]:
    mock = ThreadedServer(create_mock_app(), "127.0.0.1", free_port())
    settings = load_settings(home=tmp_path / "home", database_url=db_url,
                             providers=[mock_provider(mock)])  # fmt: skip
    _, admin = create_key(db, scopes="admin", name="admin")
    _, agent = create_key(db, scopes="agent,ingest", agent="bot", name="bot")
    try:
        with TestClient(create_app(settings, engine=db)) as client:
            state: State = client.app.state.tether  # type: ignore[attr-defined]
            yield Env(client, state, db, {"Authorization": f"Bearer {admin}"},
                      {"Authorization": f"Bearer {agent}"})  # fmt: skip
    finally:
        mock.stop()


def _eval(env: Env) -> str:
    made = env.post("/evals", json={"source": SUITE, "version": "v1"})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def _stored(db: Engine, run_id: str) -> list[Any]:
    with db.connect() as conn:
        q = select(spans.c.kind, spans.c.name, spans.c.cost_nusd).where(spans.c.run_id == run_id)
        return list(conn.execute(q.order_by(spans.c.kind)).all())


def _tool_span(run_id: str) -> SpanRecord:
    """A tool call as a gateway records it (the LLM gateway's writer queues what it is given)."""
    now = datetime.now(UTC)
    return SpanRecord(trace_id="c" * 32, span_id="d" * 16, run_id=run_id, kind="tool",
                      name="crm.lookup", started_at=now, ended_at=now, status="ok",
                      input='{"email": "ada@example.com"}',
                      attributes={"tether.decision": {"decision": "allow"}},
                      attribution=RunAttribution(agent="bot", version="v1"))  # fmt: skip


def test_the_check_sees_the_calls_the_gateway_recorded_and_the_next_attempt_starts(
    env: Env,
) -> None:
    eval_id = _eval(env)
    started = env.post(f"/evals/{eval_id}/attempts", json={"task_id": "t1", "attempt": 0})
    assert started.status_code == 201
    run_id = started.json()["run_id"]
    gateway = env.state.llm_gateway
    assert gateway is not None and run_id in gateway.eval_runs  # known to it from the start
    call = env.client.post(
        "/llm/v1/chat/completions",
        headers={**env.agent, "X-Tether-Run-Id": run_id},
        json={"model": "mock-small", "max_tokens": 20,
              "messages": [{"role": "user", "content": "look up ada"}]},
    )  # fmt: skip
    assert call.status_code == 200, call.text
    writer = env.state.llm_gateway.writer  # type: ignore[union-attr]
    written = writer.written

    async def tool_then_finish() -> Any:
        # queued and finished in one turn of the loop: the writer has not seen the tool span
        writer.submit(_tool_span(run_id))
        body = AttemptFinish(ok=True, output="ada is a customer", run_id=run_id,
                             next=AttemptStart(task_id="t2", attempt=0))  # fmt: skip
        return await finish_attempt(eval_id, "t1", 0, body, env.state, ADMIN)

    done = env.client.portal.call(tool_then_finish)  # type: ignore[union-attr]
    assert done.passed is True, done.results
    assert done.tools == ["crm.lookup"]
    stored = _stored(env.db, run_id)
    assert [(k, n) for k, n, _ in stored] == [("llm", "chat mock-small"), ("tool", "crm.lookup")]
    llm_cost = stored[0][2]
    assert llm_cost > 0 and done.cost_usd == pytest.approx(llm_cost / 1e9)
    env.client.portal.call(writer.flush)  # type: ignore[union-attr]
    # stored once (by the finish or the writer), counted once, nothing left queued
    assert len(_stored(env.db, run_id)) == 2 and writer.written == written + 2
    assert writer._pending == 0 and writer._by_run == {} and writer._untaken == {}
    with env.db.connect() as conn:
        run = conn.execute(select(runs).where(runs.c.id == run_id)).one()
    assert (run.status, run.llm_calls, run.tool_calls, run.cost_nusd) == (
        "succeeded", 1, 1, llm_cost,
    )  # fmt: skip

    nxt = done.next
    assert nxt is not None and (nxt.task_id, nxt.attempt, nxt.status) == ("t2", 0, "running")
    with env.db.connect() as conn:
        tagged = conn.execute(select(runs.c.attributes, runs.c.status, runs.c.task_id)
                              .where(runs.c.id == nxt.run_id)).one()  # fmt: skip
    assert tagged.status == "running" and tagged.task_id == "t2"
    assert tagged.attributes["tether.eval.id"] == eval_id
    assert tagged.attributes["tether.eval.attempt"] == 0

    # the next attempt finishes over HTTP; asking to start one that is done starts nothing
    again = env.post(f"/evals/{eval_id}/attempts/t2/0/finish",
                     json={"ok": True, "output": "the question", "run_id": nxt.run_id,
                           "next": {"task_id": "t1", "attempt": 0}})  # fmt: skip
    assert again.status_code == 200, again.text
    assert again.json()["passed"] is True and again.json()["next"] is None
    conflict = env.post(f"/evals/{eval_id}/attempts", json={"task_id": "t1", "attempt": 0})
    assert conflict.status_code == 409
    ev = env.client.get(f"/api/v1/evals/{eval_id}", headers=env.admin).json()
    assert (ev["attempts_done"], ev["attempts_passed"]) == (2, 2)


def test_a_finish_that_fails_changes_nothing_and_gives_the_spans_back(env: Env) -> None:
    eval_id = _eval(env)
    run_id = env.post(f"/evals/{eval_id}/attempts",
                      json={"task_id": "t1", "attempt": 0}).json()["run_id"]  # fmt: skip
    writer = env.state.llm_gateway.writer  # type: ignore[union-attr]

    async def tool_then_bad_finish() -> str:
        writer.submit(_tool_span(run_id))
        # the judge run it names does not exist: found inside the transaction, after the spans
        body = AttemptFinish(ok=True, output="x", run_id=run_id, judge_run_ids=["run_nojudge"])
        try:
            await finish_attempt(eval_id, "t1", 0, body, env.state, ADMIN)
        except NotFoundError as exc:
            return exc.message
        return "finished"

    assert env.client.portal.call(tool_then_bad_finish) == "no run run_nojudge"  # type: ignore[union-attr]
    env.client.portal.call(writer.flush)  # type: ignore[union-attr]
    # the writer stored the span it was given back; the attempt is still running
    assert [(k, n) for k, n, _ in _stored(env.db, run_id)] == [("tool", "crm.lookup")]
    with env.db.connect() as conn:
        status = conn.execute(select(eval_attempts.c.status)
                              .where(eval_attempts.c.run_id == run_id)).scalar_one()  # fmt: skip
        count = conn.execute(select(func.count()).select_from(eval_attempts)).scalar_one()
    assert (status, count) == ("running", 1)
    # a `next` the eval cannot start is refused before anything is written
    refused = [({"task_id": "t2", "attempt": 9}, "below the eval's repeats"),
               ({"task_id": "nope", "attempt": 0}, "no task 'nope'")]  # fmt: skip
    for nxt, why in refused:
        bad = env.post(f"/evals/{eval_id}/attempts/t1/0/finish",
                       json={"ok": True, "run_id": run_id, "next": nxt})  # fmt: skip
        assert bad.status_code in (400, 404) and why in bad.text
    done = env.post(f"/evals/{eval_id}/attempts/t1/0/finish",
                    json={"ok": True, "output": "ada", "run_id": run_id})  # fmt: skip
    assert done.json()["passed"] is True  # the tool span the writer stored is seen
    assert done.json()["tools"] == ["crm.lookup"] and done.json()["next"] is None


def test_an_attempt_number_past_what_the_store_holds_is_a_400(env: Env) -> None:
    eval_id = _eval(env)  # the fuzzer's find: 2**70 reached SQLite and came back a 500
    for attempt in (2**70, -1):
        done = env.post(f"/evals/{eval_id}/attempts/t1/{attempt}/finish", json={"ok": True})
        assert done.status_code == 400, done.text
        assert done.json()["error"]["message"].startswith("path.attempt: Input should be")
