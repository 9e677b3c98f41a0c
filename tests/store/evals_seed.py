"""Seeding evals, rollouts and runs straight into the store, for the store and console tests and
bench/evals.py: one place that knows how an attempt is recorded and how a rollout starts."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert

from tether.core.assertions import Result
from tether.core.eval_suite import parse_suite
from tether.store import eval_attempts, rollouts
from tether.store import evals as eval_store
from tether.store.tables import runs

BATCH = 5000


def start_rollout(
    db: Engine,
    rollout_id: str,
    *,
    agent: str = "bot",
    baseline: str = "v1",
    candidate: str = "v2",
    percent: float = 10,
    rule_source: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    return rollouts.start(
        db,
        rollout_id=rollout_id,
        agent=agent,
        baseline=baseline,
        candidate=candidate,
        percent=percent,
        rule_source=rule_source,
        rule_file=None,
        actor="seed",
        now=now or datetime.now(UTC),
    )


def insert_runs(db: Engine, rows: Iterable[dict[str, Any]]) -> int:
    """Runs as given (id, agent, version, status, started_at, cost_nusd, ...), in batches;
    `updated_at` defaults to `started_at`. Returns how many."""
    n = 0
    batch: list[dict[str, Any]] = []
    with db.begin() as conn:
        for row in rows:
            batch.append({"updated_at": row["started_at"], **row})
            n += 1
            if len(batch) == BATCH:
                conn.execute(insert(runs), batch)
                batch = []
        if batch:
            conn.execute(insert(runs), batch)
    return n


def record_eval(
    db: Engine,
    eval_id: str,
    source: str,
    version: str,
    outputs: dict[str, str],
    check: str = "hi",
) -> dict[str, Any]:
    """An eval of `source` whose every attempt of task t answered outputs[t] and passed when
    the answer contains `check` (the suite's assertion, by its name)."""
    suite = parse_suite(source)
    now = datetime.now(UTC)
    ev = eval_store.create_eval(
        db,
        eval_id=eval_id,
        suite=suite,
        source=source,
        version=version,
        repeats=suite.repeats,
        target_cost_nusd=None,
        actor="seed",
        now=now,
    )
    for task in suite.tasks:
        name = task.assertions[0].name
        out = outputs[task.id]
        for i in range(suite.repeats):
            eval_attempts.start_attempt(db, ev, task.id, i, f"run_{eval_id}_{task.id}_{i}", now)
            eval_attempts.complete_attempt(
                db,
                ev,
                task.id,
                i,
                ok=True,
                output=out,
                error=None,
                agent_ms=1.0,
                check=lambda _obs, out=out, name=name: [  # type: ignore[misc]
                    Result(name, "output_contains", check in out, "x")
                ],
                now=now,
            )
    return eval_store.get_eval(db, eval_id)
