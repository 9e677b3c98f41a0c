"""Evals and their attempts: each attempt is a real run tagged with its eval, suite, task and
attempt; what an attempt did is read back from the spans and holds the gateways recorded."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, and_, func, insert, select, update

from tether.core.assertions import Observed, Result, ToolCall
from tether.core.errors import BadRequestError, ConflictError, NotFoundError
from tether.core.eval_suite import SuiteModel
from tether.core.evals import Attempt
from tether.core.records import RunAttribution, SpanRecord
from tether.store.engine import reading
from tether.store.eval_spans import EVAL_ID_TAG, JUDGE_AGENT, SpansMissing, gap_in
from tether.store.ingest import ensure_run, set_run_status, write_spans_in
from tether.store.tables import approvals, eval_attempts, evals, runs, spans

EVAL_TAGS = (EVAL_ID_TAG, "tether.eval.suite", "tether.eval.task", "tether.eval.attempt")
# the task's fixtures on its attempt's run, read by the LLM and MCP gateways
FIXTURES_TAG = "tether.eval.fixtures"


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


def _attempt_key(eval_id: str, task_id: str, attempt: int) -> Any:
    return and_(
        eval_attempts.c.eval_id == eval_id,
        eval_attempts.c.task_id == task_id,
        eval_attempts.c.attempt == attempt,
    )


@dataclass(frozen=True)
class NextAttempt:
    """An attempt to start in the transaction that finishes another (one round trip a time)."""

    task_id: str
    attempt: int
    run_id: str
    fixtures: dict[str, Any] | None = None


def start_attempt(
    engine: Engine,
    ev: dict[str, Any] | str,
    task_id: str,
    attempt: int,
    run_id: str,
    now: datetime,
    fixtures: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Creates the attempt's run (running, tagged, with the task's fixtures for the gateways)
    and its row, in one transaction; returns the row. A finished attempt is a ConflictError;
    an interrupted one starts again with a new run."""
    ev = get_eval(engine, ev) if isinstance(ev, str) else ev
    with engine.begin() as conn:
        row = _start_in(conn, ev, NextAttempt(task_id, attempt, run_id, fixtures), now)
    if row is None:
        raise ConflictError(
            f"attempt {attempt} of {task_id} in {ev['id']} is already done", code="attempt_done"
        )
    return row


def _start_in(
    conn: Connection, ev: dict[str, Any], a: NextAttempt, now: datetime
) -> dict[str, Any] | None:
    """start_attempt's writes in the caller's transaction; None if the attempt is done."""
    eval_id = ev["id"]
    key = _attempt_key(eval_id, a.task_id, a.attempt)
    tags: dict[str, Any] = {
        EVAL_TAGS[0]: eval_id,
        EVAL_TAGS[1]: ev["suite"],
        EVAL_TAGS[2]: a.task_id,
        EVAL_TAGS[3]: a.attempt,
    }
    if a.fixtures:
        tags[FIXTURES_TAG] = a.fixtures
    attribution = RunAttribution(agent=ev["agent"], version=ev["version"], task_id=a.task_id)
    values: dict[str, Any] = {
        "run_id": a.run_id,
        "status": "running",
        "started_at": now,
        "passed": None,
        "results": None,
        "error": None,
        "ended_at": None,
    }
    old = conn.execute(select(eval_attempts.c.status).where(key)).scalar()
    if old == "done":
        return None
    ensure_run(
        conn, a.run_id, trace_id=None, attribution=attribution, started_at=now, source="eval",
        now=now,
    )  # fmt: skip
    conn.execute(update(runs).where(runs.c.id == a.run_id).values(attributes=tags))
    if old is None:
        conn.execute(
            insert(eval_attempts).values(
                eval_id=eval_id, task_id=a.task_id, attempt=a.attempt, **values
            )
        )
    else:
        conn.execute(update(eval_attempts).where(key).values(**values))
    return {
        "eval_id": eval_id,
        "task_id": a.task_id,
        "attempt": a.attempt,
        "cost_nusd": 0,
        "judge_cost_nusd": 0,
        "duration_ms": None,
        "agent_ms": None,
        "tools": None,
        **values,
    }


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


def _json(text: str | None) -> Any:
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return {}


def observe(engine: Engine, run_id: str, now: datetime) -> Observed:
    """What the gateways recorded for a run: totals, output, tool calls and their decisions,
    refusals, kills and the held calls nobody decided."""
    with reading(engine) as conn:
        return _observe(conn, run_id)


def _observe(conn: Connection, run_id: str) -> Observed:
    run = conn.execute(select(runs).where(runs.c.id == run_id)).first()
    if run is None:
        raise NotFoundError(f"no run {run_id}")
    rows = conn.execute(
        select(spans.c.kind, spans.c.name, spans.c.input, spans.c.attributes)
        .where(spans.c.run_id == run_id)
        .order_by(spans.c.started_at)
    ).all()
    pending = conn.execute(
        select(func.count()).where(approvals.c.run_id == run_id, approvals.c.status == "pending")
    ).scalar_one()
    r = run._mapping
    calls: list[ToolCall] = []
    denials = refusals = 0
    killed = r["status"] == "killed"
    for kind, name, raw_input, attrs in rows:
        attrs = attrs or {}
        outcome = attrs.get("tether.outcome")
        if outcome == "budget_exceeded":
            refusals += 1
        elif outcome == "policy_denied":
            denials += 1
        elif outcome == "run_killed":
            killed = True
        if kind != "tool":
            continue
        decision = attrs.get("tether.decision")
        # the MCP gateway records {"decision": outcome, "rule": ..., "reason": ...}
        verdict = "unknown"
        if isinstance(decision, dict):
            verdict = str(decision.get("decision") or decision.get("outcome") or "unknown")
        args = _json(raw_input)
        calls.append(ToolCall(name, args if isinstance(args, dict) else {}, verdict))
        denials += verdict == "deny"
    ended = r["ended_at"]
    return Observed(
        status=r["status"],
        output=r["output"],
        cost_nusd=r["cost_nusd"] or 0,
        llm_calls=r["llm_calls"] or 0,
        input_tokens=r["input_tokens"] or 0,
        output_tokens=r["output_tokens"] or 0,
        duration_s=(ended - r["started_at"]).total_seconds() if ended else None,
        tool_calls=tuple(calls),
        policy_denials=denials,
        pending_approvals=pending,
        budget_refusals=refusals,
        killed=killed,
        kill_reason=r["kill_reason"],
        error=r["error"],
    )


Check = Callable[[Observed], list[Result]]


def complete_attempt(
    engine: Engine,
    ev: dict[str, Any],
    task_id: str,
    attempt: int,
    *,
    ok: bool,
    output: str | None,
    error: str | None,
    agent_ms: float | None,
    check: Check,
    judge_run_ids: Sequence[str] = (),
    judge_agent: str = JUDGE_AGENT,
    run_id: str | None = None,
    spans: Sequence[SpanRecord] = (),
    then: NextAttempt | None = None,
    now: datetime,
    strict: bool = False,
) -> dict[str, Any]:
    """The agent finished an attempt: in one transaction the gateway's `spans` of it not yet
    stored are written, its run ends, what the gateways recorded is read back and checked
    (`check`), the judges' runs end and are charged apart, and the attempt and the eval's
    counters are written; then the attempt `then`, if given, starts. Returns the attempt's row,
    with that next attempt's under "next" (None if it was already done), and under
    "missing_spans" the admitted LLM calls with no span stored (another process's writer has not
    written them yet: store.eval_spans); `strict` raises SpansMissing then, writing nothing."""
    eval_id = ev["id"]
    key = _attempt_key(eval_id, task_id, attempt)
    with engine.begin() as conn:
        row = conn.execute(select(eval_attempts).where(key)).first()
        if row is None:
            raise NotFoundError(f"no attempt {attempt} of {task_id!r} in {eval_id}; start it first")
        cur = dict(row._mapping)
        if cur["status"] == "done":
            raise ConflictError("the attempt is already finished", code="attempt_done")
        if run_id is not None and run_id != cur["run_id"]:
            raise BadRequestError(
                f"run {run_id} is not attempt {attempt} of {task_id!r} (its run is "
                f"{cur['run_id']}); send the run id its start answered"
            )
        if spans:
            write_spans_in(conn, spans, now=now, source="gateway")
        missing = gap_in(conn, [cur["run_id"], *judge_run_ids])
        if missing and strict:
            raise SpansMissing(missing)
        _end_run(conn, cur["run_id"], ok=ok, output=output, error=error, now=now)
        obs = _observe(conn, cur["run_id"])
        results = check(obs)
        judge_cost = 0
        for judge_run in judge_run_ids:
            found = conn.execute(
                select(runs.c.agent, runs.c.cost_nusd).where(runs.c.id == judge_run)
            ).first()
            if found is None:
                raise NotFoundError(f"no run {judge_run}")
            if found.agent != judge_agent:
                raise BadRequestError(f"run {judge_run} is not a judge run (agent {judge_agent})")
            judge_cost += found.cost_nusd or 0
            # the judge's run is over once it has answered
            _end_run(conn, judge_run, ok=True, output=None, error=None, now=now)
        passed = all(r.passed for r in results)
        target = ev["target_cost_nusd"]
        # the eval's counter is of successes at target cost, the KPI
        at_target = passed and (target is None or obs.cost_nusd <= target)
        done = {
            "status": "done",
            "passed": passed,
            "cost_nusd": obs.cost_nusd,
            "judge_cost_nusd": judge_cost,
            "duration_ms": (now - cur["started_at"]).total_seconds() * 1000,
            "agent_ms": agent_ms,
            "results": [r.to_dict() for r in results],
            "tools": [c.name for c in obs.tool_calls],
            "error": error,
            "ended_at": now,
        }
        conn.execute(update(eval_attempts).where(key).values(**done))
        conn.execute(
            update(evals)
            .where(evals.c.id == eval_id)
            .values(
                attempts_done=evals.c.attempts_done + 1,
                attempts_passed=evals.c.attempts_passed + int(at_target),
                cost_nusd=evals.c.cost_nusd + obs.cost_nusd,
                judge_cost_nusd=evals.c.judge_cost_nusd + judge_cost,
            )
        )
        out = {**cur, **done, "missing_spans": missing}
        if then is not None:
            out["next"] = _start_in(conn, ev, then, now)
    return out


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
