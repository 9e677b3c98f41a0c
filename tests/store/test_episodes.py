"""Episodes on SQLite and PostgreSQL: similar past runs of the same agent, and a run's steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert

from tether.core.errors import NotFoundError
from tether.store import episodes
from tether.store.tables import runs, spans

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def _run(db: Engine, run_id: str, agent: str, text: str, status: str = "succeeded",
         at: datetime = T0, tools: tuple[str, ...] = ()) -> None:  # fmt: skip
    with db.begin() as conn:
        conn.execute(insert(runs).values(
            id=run_id, agent=agent, status=status, started_at=at, updated_at=at, input=text,
            output="done", input_tokens=0, output_tokens=0, cached_tokens=0, cost_nusd=25_000_000,
            cost_unknown=False, llm_calls=1, tool_calls=len(tools), span_count=len(tools),
        ))  # fmt: skip
        for i, name in enumerate(tools):
            conn.execute(insert(spans).values(
                trace_id=run_id[-32:].rjust(32, "0"), span_id=f"{i:016x}", run_id=run_id,
                kind="tool", name=name, started_at=at + timedelta(seconds=i), status="ok",
                cost_unknown=False, input='{"q": 1}', output="ok",
            ))  # fmt: skip


def test_similar_runs_of_the_same_agent_best_first(db: Engine) -> None:
    _run(
        db, "run_a", "support", "refund invoice INV-7 for acme", tools=("crm.lookup", "pay.refund")
    )
    _run(db, "run_b", "support", "reset the password for bob", at=T0 + timedelta(minutes=1))
    _run(db, "run_c", "billing", "refund invoice INV-9 for acme")  # another agent
    _run(db, "run_d", "support", "refund acme again", status="running")  # not finished
    found = episodes.similar(db, "support", "acme asks for a refund of an invoice")
    assert [e.run_id for e, _ in found] == ["run_a"]
    ep = found[0][0]
    assert ep.tools == ("crm.lookup", "pay.refund")
    assert str(ep.cost_usd) == "0.025"
    assert ep.feedback["thumbs_up"] == 0


def test_steps_in_order_and_unknown_run(db: Engine) -> None:
    _run(db, "run_s", "support", "x", tools=("a.one", "b.two", "c.three"))
    assert [s.name for s in episodes.steps(db, "run_s")] == ["a.one", "b.two", "c.three"]
    with pytest.raises(NotFoundError):
        episodes.steps(db, "run_missing")
