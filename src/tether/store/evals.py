"""Evals and their attempts: each attempt is a real run tagged with its eval, suite, task and
attempt; what an attempt did is read back from the spans and holds the gateways recorded."""

from __future__ import annotations

import hashlib
import weakref
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, insert, select, update

from tether.core.errors import NotFoundError
from tether.core.eval_suite import SuiteModel
from tether.core.evals import Attempt
from tether.store.engine import reading
from tether.store.eval_attempts import FIXTURES_TAG
from tether.store.ingest import set_run_status
from tether.store.tables import eval_attempts, evals, runs

# What never changes in an eval once created, per engine (every attempt's start and finish reads
# it; the suite text may be megabytes): at most _FIXED_MAX evals a process.
_FIXED_COLUMNS = ("id", "suite", "agent", "version", "repeats", "target_cost_nusd",
                  "suite_source", "suite_hash", "tasks", "created_at")  # fmt: skip
_FIXED: weakref.WeakKeyDictionary[Engine, dict[str, dict[str, Any]]] = weakref.WeakKeyDictionary()
_FIXED_MAX = 64


def create_eval(
    engine: Engine,
    *,
    eval_id: str,
    suite: SuiteModel,
    source: str,
    version: str,
    repeats: int,
    target_cost_nusd: int | None,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    row = {
        "id": eval_id,
        "suite": suite.suite,
        "agent": suite.agent,
        "version": version,
        "status": "running",
        "repeats": repeats,
        "target_cost_nusd": target_cost_nusd,
        "suite_source": source,
        "suite_hash": hashlib.sha256(source.encode()).hexdigest(),
        "tasks": len(suite.tasks),
        "attempts_done": 0,
        "attempts_passed": 0,
        "cost_nusd": 0,
        "judge_cost_nusd": 0,
        "created_by": actor,
        "created_at": now,
    }
    with engine.begin() as conn:
        conn.execute(insert(evals).values(**row))
    return get_eval(engine, eval_id)


def by_id(engine: Engine, table: Table, row_id: str, missing: str) -> dict[str, Any]:
    """One row of an eval-area table by its id; NotFoundError(`missing`) when there is none."""
    with reading(engine) as conn:
        row = conn.execute(select(table).where(table.c.id == row_id)).first()
    if row is None:
        raise NotFoundError(missing)
    return dict(row._mapping)


def newest(engine: Engine, table: Table, limit: int, **equal: str | None) -> list[dict[str, Any]]:
    """The newest rows of an eval-area table (by created_at, then id), where each given column
    equals its value (a None value is no filter)."""
    q = select(table).order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit)
    for column, value in equal.items():
        if value:
            q = q.where(table.c[column] == value)
    with reading(engine) as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def get_eval(engine: Engine, eval_id: str) -> dict[str, Any]:
    return by_id(engine, evals, eval_id, f"no eval {eval_id}; `tether eval list` shows the ids")


def fixed_eval(engine: Engine, eval_id: str) -> dict[str, Any]:
    """The eval's columns that never change after its creation (_FIXED_COLUMNS), read once per
    process; NotFoundError as get_eval."""
    cached = _FIXED.setdefault(engine, {})
    found = cached.get(eval_id)
    if found is None:
        row = get_eval(engine, eval_id)
        found = {c: row[c] for c in _FIXED_COLUMNS}
        if len(cached) >= _FIXED_MAX:
            cached.clear()
        cached[eval_id] = found
    return found


def list_evals(
    engine: Engine, *, agent: str | None = None, suite: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    return newest(engine, evals, limit, agent=agent, suite=suite)


def latest_eval(engine: Engine, suite: str, version: str) -> dict[str, Any] | None:
    q = (
        select(evals)
        .where(evals.c.suite == suite, evals.c.version == version)
        .order_by(evals.c.created_at.desc(), evals.c.id.desc())
        .limit(1)
    )
    with reading(engine) as conn:
        row = conn.execute(q).first()
    return dict(row._mapping) if row else None


def fixtures_of(attributes: dict[str, Any] | None) -> dict[str, Any] | None:
    """The eval fixtures a run carries (scripted tool outputs, a mock LLM script), if any."""
    found = (attributes or {}).get(FIXTURES_TAG)
    return found if isinstance(found, dict) and found else None


def run_fixtures(engine: Engine, run_id: str) -> dict[str, Any] | None:
    """The fixtures of the eval attempt a run is, if it is one and its task has any."""
    with reading(engine) as conn:
        attrs = conn.execute(select(runs.c.attributes).where(runs.c.id == run_id)).scalar()
    return fixtures_of(attrs if isinstance(attrs, dict) else None)


def end_run(
    engine: Engine, run_id: str, *, ok: bool, output: str | None, error: str | None, now: datetime
) -> None:
    """The agent finished: the run ends succeeded or failed (a kill recorded by the gateway
    stays a kill), with the agent's final output."""
    with engine.begin() as conn:
        _end_run(conn, run_id, ok=ok, output=output, error=error, now=now)


def _end_run(
    conn: Connection, run_id: str, *, ok: bool, output: str | None, error: str | None,
    now: datetime,
) -> None:  # fmt: skip
    set_run_status(conn, run_id, "succeeded" if ok else "failed", now=now, reason=error)
    conn.execute(update(runs).where(runs.c.id == run_id).values(output=output))


def finish_eval(engine: Engine, eval_id: str, now: datetime) -> dict[str, Any]:
    with engine.begin() as conn:
        conn.execute(
            update(evals).where(evals.c.id == eval_id).values(status="finished", finished_at=now)
        )
    return get_eval(engine, eval_id)


def attempt_rows(
    engine: Engine, eval_id: str, *, task_id: str | None = None, attempt: int | None = None
) -> list[dict[str, Any]]:
    q = select(eval_attempts).where(eval_attempts.c.eval_id == eval_id)
    if task_id is not None:
        q = q.where(eval_attempts.c.task_id == task_id)
    if attempt is not None:
        q = q.where(eval_attempts.c.attempt == attempt)
    with reading(engine) as conn:
        rows = conn.execute(q.order_by(eval_attempts.c.task_id, eval_attempts.c.attempt))
        return [dict(r._mapping) for r in rows]


def core_attempts(rows: list[dict[str, Any]]) -> list[Attempt]:
    """Finished attempts as the statistics see them."""
    out = []
    for r in rows:
        if r["status"] != "done":
            continue
        results = r["results"] or []
        out.append(
            Attempt(
                r["task_id"],
                r["attempt"],
                bool(r["passed"]),
                r["cost_nusd"] or 0,
                tuple(x["name"] for x in results if not x["passed"]),
                tuple(x["name"] for x in results),
            )
        )
    return out
