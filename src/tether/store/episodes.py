"""Episodic memory: an agent's past runs as episodes (task input, tool sequence, outcome, cost,
feedback), the ones most like a new task, and a run's recorded steps in order for replay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select

from tether.core.episodes import bm25
from tether.core.errors import BadRequestError, NotFoundError
from tether.core.money import nusd_to_usd
from tether.store.engine import reading
from tether.store.feedback import feedback_summaries
from tether.store.tables import runs, spans

FINISHED = ("succeeded", "failed", "killed")
HISTORY = 2000


@dataclass(frozen=True)
class Episode:
    run_id: str
    agent: str | None
    version: str | None
    task_id: str | None
    status: str
    input: str | None
    output: str | None
    cost_usd: Decimal
    llm_calls: int
    tools: tuple[str, ...]
    feedback: dict[str, Any]
    score: float | None
    started_at: datetime

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["cost_usd"] = str(self.cost_usd)
        out["tools"] = list(self.tools)
        out["started_at"] = self.started_at.isoformat()
        return out


@dataclass(frozen=True)
class Step:
    """One recorded span of a run, in the order it started."""

    n: int
    kind: str
    name: str
    input: str | None
    output: str | None
    model: str | None
    error: str | None
    latency_ms: float | None
    started_at: datetime

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["started_at"] = self.started_at.isoformat()
        return out


def _tools(conn: Any, run_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
    seq: dict[str, list[str]] = {r: [] for r in run_ids}
    rows = conn.execute(
        select(spans.c.run_id, spans.c.name)
        .where(spans.c.run_id.in_(list(run_ids)), spans.c.kind == "tool")
        .order_by(spans.c.run_id, spans.c.started_at)
    )
    for r in rows:
        seq[r.run_id].append(r.name)
    return {k: tuple(v) for k, v in seq.items()}


def similar(
    engine: Engine, agent: str, task: str, *, k: int = 5, history: int = HISTORY
) -> list[tuple[Episode, float]]:
    """The agent's finished runs whose task input best matches `task` (BM25), best first."""
    if not 1 <= k <= 50:
        raise BadRequestError("k: 1-50")
    if not task or not task.strip():
        raise BadRequestError("task: the text of the new task")
    r = runs.c
    with reading(engine) as conn:
        rows = conn.execute(
            select(r.id, r.input)
            .where(r.agent == agent, r.status.in_(FINISHED), r.input.is_not(None))
            .order_by(r.started_at.desc())
            .limit(history)
        ).all()
        ranked = bm25(task, [row.input or "" for row in rows], k)
        ids = [rows[x.index].id for x in ranked]
        if not ids:
            return []
        full = {row.id: row for row in conn.execute(select(runs).where(r.id.in_(ids)))}
        tools = _tools(conn, ids)
        fb = feedback_summaries(conn, ids)
    out = []
    for x, run_id in zip(ranked, ids, strict=True):
        row = full[run_id]
        out.append((Episode(
            run_id=row.id, agent=row.agent, version=row.version, task_id=row.task_id,
            status=row.status, input=row.input, output=row.output,
            cost_usd=nusd_to_usd(row.cost_nusd), llm_calls=row.llm_calls, tools=tools[run_id],
            feedback=fb.get(run_id, {}), score=row.score, started_at=row.started_at,
        ), round(x.score, 4)))  # fmt: skip
    return out


def steps(engine: Engine, run_id: str) -> list[Step]:
    """Every recorded span of a run (LLM calls, tool calls, approvals...) in start order."""
    s = spans.c
    with reading(engine) as conn:
        if conn.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is None:
            raise NotFoundError(f"no run {run_id}; `tether runs list` shows the ids")
        rows = conn.execute(
            select(s.kind, s.name, s.input, s.output, s.model, s.error, s.latency_ms,
                   s.started_at)
            .where(s.run_id == run_id)
            .order_by(s.started_at, s.span_id)
        ).all()  # fmt: skip
    return [
        Step(i + 1, r.kind, r.name, r.input, r.output, r.model, r.error, r.latency_ms, r.started_at)
        for i, r in enumerate(rows)
    ]
