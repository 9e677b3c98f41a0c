from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from tests.store.test_runs import T0, make_run
from tether.core.errors import BadRequestError
from tether.store.agents import get_agent, list_agents
from tether.store.costs import cost_breakdown, success_at_target
from tether.store.policies import apply_policy

USD = 1_000_000_000


def _seed(db: Engine) -> None:
    make_run(db, 1, agent="triage", version="v1", user="alice", cost=USD // 2, task="A")
    make_run(db, 2, agent="triage", version="v1", user="bob", cost=3 * USD, task="A")
    make_run(db, 3, agent="triage", version="v2", user="alice", status="error", cost=USD, task="B")
    make_run(db, 4, agent="writer", version="v1", user="alice", cost=USD // 10,
             start=T0 + timedelta(days=1), task="C")  # fmt: skip
    make_run(db, 5, agent="writer", version="v1", user="alice", cost=USD, seconds=None, task="C")


def test_cost_by_day_agent_version_user_task(db: Engine) -> None:
    _seed(db)
    day = cost_breakdown(db, "day")
    assert [(r["key"], r["cost_nusd"], r["runs"]) for r in day] == [
        ("2026-11-25", 5_500_000_000, 4),
        ("2026-11-26", USD // 10, 1),
    ]
    assert day[0]["input_tokens"] == 400 and day[0]["output_tokens"] == 80
    by_agent = {r["key"]: r["cost_nusd"] for r in cost_breakdown(db, "agent")}
    assert by_agent == {"triage": 4_500_000_000, "writer": 1_100_000_000}
    by_version = cost_breakdown(db, "version")
    assert by_version[0]["key"] == "triage@v1"
    assert {(r["agent"], r["version"]) for r in by_version} == {
        ("triage", "v1"),
        ("triage", "v2"),
        ("writer", "v1"),
    }
    by_user = {r["key"]: r["runs"] for r in cost_breakdown(db, "user")}
    assert by_user == {"alice": 4, "bob": 1}
    by_task = {r["key"]: r["cost_nusd"] for r in cost_breakdown(db, "task", agent="writer")}
    assert by_task == {"C": 1_100_000_000}
    window = cost_breakdown(db, "day", start=T0 + timedelta(hours=12),
                            end=T0 + timedelta(days=2))  # fmt: skip
    assert [r["key"] for r in window] == ["2026-11-26"]
    with pytest.raises(BadRequestError, match=r"^group_by"):
        cost_breakdown(db, "team")
    with pytest.raises(BadRequestError, match=r"^to"):
        cost_breakdown(db, "day", start=T0, end=T0)


def test_success_rate_at_target(db: Engine) -> None:
    _seed(db)
    plain = {(r["agent"], r["version"]): r for r in success_at_target(db)}
    # the running writer run is not finished, so it does not count
    assert plain["writer", "v1"]["total"] == 1 and plain["writer", "v1"]["rate"] == 1.0
    t1 = plain["triage", "v1"]
    assert (t1["successes"], t1["total"], t1["target_source"]) == (2, 2, None)
    assert 0 < t1["low"] < 1 and t1["high"] == 1.0
    assert plain["triage", "v2"]["rate"] == 0.0
    at_1usd = {(r["agent"], r["version"]): r for r in success_at_target(
        db, target_cost_usd=Decimal("1"))}  # fmt: skip
    assert at_1usd["triage", "v1"]["successes"] == 1 and at_1usd["triage", "v1"]["rate"] == 0.5
    assert at_1usd["triage", "v1"]["target_cost_nusd"] == USD
    assert at_1usd["triage", "v1"]["target_source"] == "query"


def test_policy_run_budget_is_the_default_target(db: Engine) -> None:
    _seed(db)
    source = "agent: triage\nbudgets:\n  run: {max_cost_usd: 2.00}\n"
    apply_policy(db, source, "test", T0)
    rows = {(r["agent"], r["version"]): r for r in success_at_target(db)}
    assert rows["triage", "v1"]["target_source"] == "policy"
    assert rows["triage", "v1"]["target_cost_nusd"] == 2 * USD
    assert rows["triage", "v1"]["successes"] == 1  # the $3 run succeeded but over the budget
    assert rows["writer", "v1"]["target_source"] is None
    # a newer policy version without a run budget drops the target again
    apply_policy(db, "agent: triage\n", "test", T0 + timedelta(seconds=1))
    rows = {(r["agent"], r["version"]): r for r in success_at_target(db)}
    assert rows["triage", "v1"]["target_source"] is None and rows["triage", "v1"]["successes"] == 2


def test_agents_with_versions_and_counts(db: Engine) -> None:
    _seed(db)
    agents = {a["name"]: a for a in list_agents(db)}
    assert agents["triage"]["versions"] == ["v1", "v2"]
    assert (agents["triage"]["runs"], agents["triage"]["failed"]) == (3, 1)
    assert agents["writer"]["running"] == 1
    triage = get_agent(db, "triage")
    v1 = next(v for v in triage["versions"] if v["version"] == "v1")
    assert (v1["runs"], v1["cost_nusd"], v1["succeeded"]) == (2, 3_500_000_000, 2)
    assert triage["last_run_at"] is not None
