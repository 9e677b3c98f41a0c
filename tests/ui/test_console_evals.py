"""The evals and rollouts pages against the real app on SQLite and PostgreSQL: the eval grid links
each attempt to its run, verdicts and compare render, the rollout page shows per-version figures
and the rule's state, its buttons change the rollout (admin, CSRF), and home shows both."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.store.evals_seed import insert_runs, record_eval, start_rollout
from tests.ui.test_console import csrf_of, login
from tether.config import load_settings
from tether.core.evals import GateCriteria, gate
from tether.server.app import create_app
from tether.store import evals as eval_store
from tether.store import gates, rollouts
from tether.store.keys import create_key

SUITE = """\
suite: refunds
agent: bot
repeats: 2
tasks:
  - {id: t1, input: a, assert: [{name: said hi, output_contains: hi}]}
  - {id: t2, input: b, assert: [{name: said hi, output_contains: hi}]}
"""


@pytest.fixture
def env(db: Engine, tmp_path: Path) -> Iterator[tuple[TestClient, Engine, dict[str, str]]]:
    settings = load_settings(home=tmp_path / "home", database_url=str(db.url))
    record_eval(db, "eval_a000000001", SUITE, "v1", {"t1": "hi", "t2": "hi"})
    record_eval(db, "eval_b000000001", SUITE, "v2", {"t1": "hi", "t2": "nope"})
    cand = eval_store.core_attempts(eval_store.attempt_rows(db, "eval_b000000001"))
    base = eval_store.core_attempts(eval_store.attempt_rows(db, "eval_a000000001"))
    crit = GateCriteria(min_success=0.9)
    gates.save_verdict(
        db,
        verdict_id="gate_x000000001",
        ev=eval_store.get_eval(db, "eval_b000000001"),
        baseline=eval_store.get_eval(db, "eval_a000000001"),
        criteria=crit,
        verdict=gate(cand, crit, base),
        actor="t",
        now=datetime.now(UTC),
    )
    start_rollout(db, "ro_c000000001")
    now = datetime.now(UTC)
    insert_runs(
        db,
        (
            {"id": f"run_r{i}", "agent": "bot", "version": "v2", "status": "succeeded",
             "started_at": now, "cost_nusd": 10}
            for i in range(3)
        ),
    )  # fmt: skip
    keys = {s: create_key(db, scopes=s, name=s)[1] for s in ("admin", "read")}
    with TestClient(create_app(settings, engine=db), follow_redirects=False) as client:
        yield client, db, keys


def test_eval_pages(env: tuple[TestClient, Engine, dict[str, str]]) -> None:
    client, _, keys = env
    login(client, keys["read"])
    listing = client.get("/evals").text
    assert "eval_b000000001" in listing and ">fail<" in listing and "refunds" in listing
    detail = client.get("/evals/eval_b000000001").text
    assert 'href="/runs/run_eval_b000000001_t2_1"' in detail and ">fail<" in detail
    assert "said hi (2)" in detail and "Wilson 95 %" in detail
    assert "/evals/compare?a=eval_a000000001&b=eval_b000000001" in detail
    cmp = client.get("/evals/compare", params={"a": "eval_a000000001", "b": "eval_b000000001"})
    assert (
        cmp.status_code == 200 and "regressed" in cmp.text and "1 regressed, 0 improved" in cmp.text
    )
    assert client.get("/evals/eval_nope").status_code == 404
    home = client.get("/").text
    assert "Shipping" in home and "refunds v2" in home and "v2 at 10 % vs v1" in home


def test_rollout_page_and_buttons(env: tuple[TestClient, Engine, dict[str, str]]) -> None:
    client, db, keys = env
    login(client, keys["read"])
    page = client.get("/rollouts").text
    assert "v2 vs v1" in page and "3/3 = 100" in page and "collecting" in page
    assert 'value="promote"' not in page  # read-only viewers get no buttons
    client.cookies.clear()
    login(client, keys["admin"])
    page = client.get("/rollouts").text
    token = csrf_of(page)
    bad = client.post("/rollouts/ro_c000000001/action", data={"action": "pause", "csrf": "x"})
    assert bad.status_code in (400, 403)
    assert rollouts.get(db, "ro_c000000001")["status"] == "running"
    done = client.post(
        "/rollouts/ro_c000000001/action",
        data={"action": "rollback", "reason": "bad canary", "csrf": token},
    )
    assert done.status_code == 303
    ro = rollouts.get(db, "ro_c000000001")
    assert (ro["status"], ro["reason"]) == ("rolled_back", "bad canary")
    assert "rolled_back" in client.get("/rollouts").text
