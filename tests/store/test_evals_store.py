"""Evals, attempts, verdicts and rollouts in the store, on SQLite and PostgreSQL: an attempt is a
tagged run; what it did is read back from the recorded spans and holds; rollout arms aggregate
the runs per version; transitions are guarded and audited."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert, select, update

from tests.store.evals_seed import insert_runs, start_rollout
from tether.core.assertions import Observed, Result
from tether.core.errors import BadRequestError, ConflictError
from tether.core.eval_suite import parse_suite
from tether.core.evals import GateCriteria, gate
from tether.core.records import SpanRecord
from tether.store import eval_attempts, gates, rollouts
from tether.store import evals as store
from tether.store.ingest import set_run_status, write_spans
from tether.store.tables import approvals, audit_log, runs

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
SUITE = """\
suite: refunds
agent: bot
tasks:
  - id: t1
    input: refund 1
    assert: [{name: looked up, tool_called: crm.lookup}]
"""


def _span(run_id: str, n: int, **kw: object) -> SpanRecord:
    base: dict[str, object] = dict(
        trace_id="a" * 32,
        span_id=f"{n:016x}",
        run_id=run_id,
        kind="tool",
        name="crm.lookup",
        started_at=NOW + timedelta(seconds=n),
        ended_at=NOW + timedelta(seconds=n, milliseconds=5),
        status="ok",
    )
    base.update(kw)
    return SpanRecord(**base)  # type: ignore[arg-type]


def test_an_attempt_is_a_tagged_run_observed_from_its_spans(db: Engine) -> None:
    suite = parse_suite(SUITE)
    store.create_eval(
        db,
        eval_id="eval_1",
        suite=suite,
        source=SUITE,
        version="v2",
        repeats=1,
        target_cost_nusd=None,
        actor="t",
        now=NOW,
    )
    eval_attempts.start_attempt(db, store.get_eval(db, "eval_1"), "t1", 0, "run_e1", NOW)
    with db.connect() as conn:
        run = conn.execute(select(runs).where(runs.c.id == "run_e1")).one()._mapping
    assert (run["agent"], run["version"], run["task_id"], run["status"]) == (
        "bot",
        "v2",
        "t1",
        "running",
    )
    assert run["attributes"]["tether.eval.id"] == "eval_1"
    assert run["attributes"]["tether.eval.attempt"] == 0
    write_spans(
        db,
        [
            _span(
                "run_e1",
                1,
                input=json.dumps({"order_id": "1"}),
                attributes={"tether.decision": {"decision": "allow"}},
            ),
            _span(
                "run_e1",
                2,
                name="mail.send",
                status="error",
                error="tether denied mail.send: x",
                attributes={"tether.decision": {"decision": "deny"}},
            ),
            _span(
                "run_e1",
                3,
                kind="other",
                name="refused gpt",
                status="error",
                attributes={"tether.outcome": "budget_exceeded"},
            ),
        ],
        now=NOW,
        source="gateway",
    )
    with db.begin() as conn:
        conn.execute(
            insert(approvals).values(
                id="apr_1",
                run_id="run_e1",
                tool="x",
                status="pending",
                default_decision="deny",
                created_at=NOW,
                expires_at=NOW,
            )
        )
    seen = []

    def check(obs: Observed) -> list[Result]:
        seen.append(obs)
        return [Result("looked up", "tool_called", True, "ok")]

    ev = store.get_eval(db, "eval_1")
    with pytest.raises(BadRequestError):  # a run id that is not the attempt's
        eval_attempts.complete_attempt(
            db, ev, "t1", 0, ok=True, output="done", error=None, agent_ms=1.0, check=check,
            run_id="run_other", now=NOW,
        )  # fmt: skip
    with pytest.raises(BadRequestError):  # a "judge" run of the agent itself
        eval_attempts.complete_attempt(
            db, ev, "t1", 0, ok=True, output="done", error=None, agent_ms=1.0, check=check,
            judge_run_ids=["run_e1"], now=NOW,
        )  # fmt: skip
    seen.clear()
    row = eval_attempts.complete_attempt(
        db,
        ev,
        "t1",
        0,
        ok=True,
        output="done",
        error=None,
        agent_ms=12.0,
        check=check,
        run_id="run_e1",
        now=NOW + timedelta(seconds=4),
    )
    (obs,) = seen
    assert [c.name for c in obs.tool_calls] == ["crm.lookup", "mail.send"]
    assert obs.tool_calls[0].arguments == {"order_id": "1"}
    assert (obs.policy_denials, obs.budget_refusals, obs.pending_approvals) == (1, 1, 1)
    assert obs.status == "succeeded" and obs.output == "done" and obs.duration_s == 4.0
    assert row["passed"] is True and row["tools"] == ["crm.lookup", "mail.send"]
    with pytest.raises(ConflictError):
        eval_attempts.start_attempt(db, store.get_eval(db, "eval_1"), "t1", 0, "run_e2", NOW)
    ev = store.get_eval(db, "eval_1")
    assert (ev["attempts_done"], ev["attempts_passed"], ev["judge_cost_nusd"]) == (1, 1, 0)
    (att,) = store.core_attempts(store.attempt_rows(db, "eval_1"))
    assert att.passed and att.assertions == ("looked up",)
    v = gate([att], GateCriteria(min_success=0.85))
    saved = gates.save_verdict(
        db,
        verdict_id="gate_1",
        ev=ev,
        baseline=None,
        criteria=GateCriteria(min_success=0.85),
        verdict=v,
        actor="t",
        now=NOW,
    )
    assert saved["outcome"] == "inconclusive" and saved["exit_code"] == 3
    assert gates.last_per_agent(db)["bot"]["id"] == "gate_1"


def _run(
    db: Engine, rid: str, version: str, status: str, cost: int, at: datetime,
    updated: datetime | None = None,
) -> None:  # fmt: skip
    insert_runs(db, [dict(id=rid, agent="bot", version=version, status=status, started_at=at,
                          cost_nusd=cost, updated_at=updated or at)])  # fmt: skip


def set_status(db: Engine, run_id: str, status: str, now: datetime) -> None:
    with db.begin() as conn:
        set_run_status(conn, run_id, status, now=now)


def test_rollout_arms_transitions_and_audit(db: Engine) -> None:
    ro = start_rollout(db, "ro_1", now=NOW)
    with pytest.raises(ConflictError):
        start_rollout(db, "ro_2", candidate="v3", now=NOW)
    later = NOW + timedelta(minutes=1)
    _run(db, "r_old", "v2", "succeeded", 1, NOW - timedelta(days=1))  # before the rollout
    _run(db, "r1", "v1", "succeeded", 10, later)
    _run(db, "r2", "v1", "failed", 10, later)
    _run(db, "r3", "v2", "succeeded", 10, later)
    _run(db, "r4", "v2", "succeeded", 99, later)  # above the target cost
    _run(db, "r5", "v2", "killed", 5, later)
    _run(db, "r6", "v2", "running", 5, later)  # not finished: not counted
    write_spans(
        db,
        [
            # a violation is the gateways' structured decision, whatever the error's text
            _span("r3", 1, status="error", error="no", attributes={"tether.decision":
                                                                  {"decision": "deny"}}),
            _span("r1", 2, status="error", error="tether denied crm.x: looks like a denial"),
        ],
        now=NOW,
        source="gateway",
    )  # fmt: skip
    arms = rollouts.arms(db, ro, target_nusd=50)
    assert (arms["v1"].tasks, arms["v1"].successes, arms["v1"].errors) == (2, 1, 1)
    c = arms["v2"]
    # r3's cost is recomputed from its spans (none priced): 0 + 99 + 5
    assert (c.tasks, c.successes, c.kills, c.policy_violations, c.cost_nusd) == (3, 1, 1, 1, 104)
    rollouts.transition(db, "ro_1", "paused", reason="hold on", actor="t", now=later)
    with pytest.raises(ConflictError):
        rollouts.transition(db, "ro_1", "step_up", reason="x", actor="t", now=later, percent=25)
    rollouts.transition(db, "ro_1", "resumed", reason="go", actor="t", now=later)
    done = rollouts.transition(
        db, "ro_1", "rolled_back", reason="guardrail", actor="rule", now=later
    )
    assert (done["status"], done["percent"], done["ended_at"]) == ("rolled_back", 0.0, later)
    kinds = [e["kind"] for e in rollouts.events(db, "ro_1")]
    assert kinds == ["started", "paused", "resumed", "rolled_back"]
    with db.connect() as conn:
        actions = [a for (a,) in conn.execute(select(audit_log.c.action))]
    assert actions.count("rollout.rolled_back") == 1 and "rollout.started" in actions
    assert rollouts.latest_for(db, "bot")["id"] == "ro_1"  # type: ignore[index]
    rollouts.register_endpoint(db, "bot", "v2", "http://127.0.0.1:9/agent", NOW)
    rollouts.register_endpoint(db, "bot", "v2", "http://127.0.0.1:9/agent2", NOW)
    assert rollouts.endpoint_for(db, "bot", "v2") == "http://127.0.0.1:9/agent2"
    assert rollouts.endpoint_for(db, "bot", "v9") is None


def test_incremental_arms_equal_a_full_read_through_late_writes(db: Engine) -> None:
    ro = start_rollout(db, "ro_inc", now=NOW)
    cache = rollouts.ArmsCache()
    at = [NOW + timedelta(minutes=m) for m in range(10)]

    def both(now: datetime) -> dict[str, rollouts.Arm]:
        whole = rollouts.arms(db, ro, target_nusd=50)
        assert cache.arms(db, ro, 50, now) == whole
        return whole

    _run(db, "i1", "v1", "succeeded", 10, at[0])
    _run(db, "i2", "v2", "running", 10, at[1])  # open: the count stops before it
    _run(db, "i3", "v2", "succeeded", 10, at[2])
    assert both(at[9] + timedelta(hours=1))["v2"].tasks == 1
    assert cache.entries  # counted up to the open run
    set_status(db, "i2", "killed", at[9] + timedelta(hours=1, minutes=1))
    assert both(at[9] + timedelta(hours=2))["v2"].kills == 1
    # a run that arrives late with an old start, and a late cost on a counted run
    late = NOW + timedelta(hours=3)
    _run(db, "i0", "v1", "failed", 10, at[0] + timedelta(seconds=30), updated=late)
    with db.begin() as conn:
        conn.execute(update(runs).where(runs.c.id == "i1").values(
            cost_nusd=99, updated_at=NOW + timedelta(hours=3)))  # fmt: skip
    arms = both(NOW + timedelta(hours=4))
    assert (arms["v1"].tasks, arms["v1"].successes, arms["v1"].errors) == (2, 0, 1)
    write_spans(db, [_span("i3", 9, status="error", error="x",
                           attributes={"tether.outcome": "policy_denied"})],
                now=NOW + timedelta(hours=5), source="gateway")  # fmt: skip
    assert both(NOW + timedelta(hours=6))["v2"].policy_violations == 1
