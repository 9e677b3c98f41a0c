"""Gate verdicts: every `tether eval gate` decision with its criteria, figures and reasons."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, insert, select

from tether.core.evals import GateCriteria, Verdict
from tether.store.engine import reading
from tether.store.evals import by_id, newest
from tether.store.tables import gate_verdicts


def save_verdict(
    engine: Engine,
    *,
    verdict_id: str,
    ev: dict[str, Any],
    baseline: dict[str, Any] | None,
    criteria: GateCriteria,
    verdict: Verdict,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    row = {
        "id": verdict_id,
        "suite": ev["suite"],
        "agent": ev["agent"],
        "version": ev["version"],
        "eval_id": ev["id"],
        "baseline_version": baseline["version"] if baseline else None,
        "baseline_eval_id": baseline["id"] if baseline else None,
        "outcome": verdict.outcome,
        "exit_code": verdict.exit_code,
        "criteria": {
            "min_success": criteria.min_success,
            "max_cost_nusd": criteria.max_cost_nusd,
            "confidence": criteria.confidence,
        },
        "successes": verdict.success.successes,
        "total": verdict.success.total,
        "more_attempts": verdict.more_attempts,
        "reasons": list(verdict.reasons),
        "comparisons": [
            {
                "metric": c.metric,
                "pairs": c.pairs,
                "worse": c.worse,
                "better": c.better,
                "p_value": c.p_value,
                "p_holm": c.p_holm,
                "significant": c.significant,
                "tasks": c.tasks,
            }
            for c in verdict.comparisons
        ],
        "regressions": list(verdict.regressions),
        "actor": actor,
        "created_at": now,
    }
    with engine.begin() as conn:
        conn.execute(insert(gate_verdicts).values(**row))
    return get_verdict(engine, verdict_id)


def get_verdict(engine: Engine, verdict_id: str) -> dict[str, Any]:
    return by_id(engine, gate_verdicts, verdict_id, f"no gate verdict {verdict_id}")


def list_verdicts(
    engine: Engine,
    *,
    agent: str | None = None,
    eval_id: str | None = None,
    outcome: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    return newest(engine, gate_verdicts, limit, agent=agent, eval_id=eval_id, outcome=outcome)


def last_per_agent(engine: Engine) -> dict[str, dict[str, Any]]:
    """The newest verdict of each agent (for the home page)."""
    newest = (
        select(gate_verdicts.c.agent, func.max(gate_verdicts.c.created_at).label("at"))
        .group_by(gate_verdicts.c.agent)
        .subquery()
    )
    q = select(gate_verdicts).join(
        newest,
        (gate_verdicts.c.agent == newest.c.agent) & (gate_verdicts.c.created_at == newest.c.at),
    )
    with reading(engine) as conn:
        return {r._mapping["agent"]: dict(r._mapping) for r in conn.execute(q)}
