"""Applying a rollout's stated rule once: read each version's runs since the start, decide with
core.rollout.evaluate, record the transition (audited) and announce it to the webhooks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from tether.core.rollout import Decision, evaluate
from tether.core.rollout_rule import parse_rule
from tether.store import rollouts
from tether.store.engine import reading
from tether.store.tables import runs

KIND = {
    "promote": "promoted",
    "rollback": "rolled_back",
    "inconclusive": "inconclusive",
    "step_up": "step_up",
}


def _tasks_at_step(engine: Engine, ro: dict[str, Any]) -> int:
    q = select(func.count()).where(
        runs.c.agent == ro["agent"],
        runs.c.version == ro["candidate"],
        runs.c.started_at >= ro["step_started_at"],
        runs.c.status.in_(("succeeded", "failed", "killed")),
    )
    with reading(engine) as conn:
        return int(conn.execute(q).scalar_one())


def decide(
    engine: Engine, ro: dict[str, Any], now: datetime, cache: rollouts.ArmsCache | None = None
) -> Decision:
    """The rule's decision for a rollout now, without acting on it (with a cache, reading only
    the runs since its last evaluation)."""
    rule = parse_rule(ro["rule_source"], ro["rule_file"] or "<rule>").to_rule()
    if cache is not None:
        arms = cache.arms(engine, ro, rule.target_cost_nusd, now)
    else:
        arms = rollouts.arms(engine, ro, rule.target_cost_nusd)
    elapsed = (now - ro["started_at"]).total_seconds()
    return evaluate(
        rule,
        ro["percent"],
        arms[ro["baseline"]],
        arms[ro["candidate"]],
        elapsed,
        _tasks_at_step(engine, ro),
    )


def apply(
    engine: Engine,
    rollout_id: str,
    now: datetime | None = None,
    cache: rollouts.ArmsCache | None = None,
) -> tuple[dict[str, Any], str | None]:
    """Evaluates a running rollout and acts; returns the rollout and the event kind, if any."""
    now = now or datetime.now(UTC)
    ro = rollouts.get(engine, rollout_id)
    if ro["status"] != "running":
        return ro, None
    d = decide(engine, ro, now, cache)
    record = {
        "action": d.action,
        "reason": d.reason,
        "percent": d.percent,
        "statistic": d.statistic,
        "threshold": d.threshold,
        "at": now.isoformat(),
    }
    if d.action == "continue":
        rollouts.note_evaluation(engine, rollout_id, record, now)
        return rollouts.get(engine, rollout_id), None
    kind = KIND[d.action]
    row = rollouts.transition(
        engine,
        rollout_id,
        kind,
        reason=d.reason,
        actor="rollout-rule",
        now=now,
        percent=d.percent,
        decision=record,
    )
    return row, kind


def event_body(ro: dict[str, Any], kind: str, actor: str) -> tuple[dict[str, Any], str]:
    """The webhook payload of a rollout state change and its one-line text."""
    event = {
        "type": f"rollout.{kind}",
        "rollout": {
            "id": ro["id"],
            "agent": ro["agent"],
            "baseline": ro["baseline"],
            "candidate": ro["candidate"],
            "status": ro["status"],
            "percent": ro["percent"],
            "reason": ro["reason"],
        },
        "actor": actor,
    }
    text = (
        f"rollout {ro['id']} of {ro['agent']} ({ro['candidate']} vs {ro['baseline']}): "
        f"{kind.replace('_', ' ')} at {ro['percent']:g} % - {ro['reason']}"
    )
    return event, text
