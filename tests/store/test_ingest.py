from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from tether.core.records import RunAttribution, SpanRecord, run_id_for_trace
from tether.store.engine import reading
from tether.store.ingest import set_run_status, write_spans
from tether.store.tables import agent_versions, runs, spans

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TRACE = "0af7651916cd43dd8448eb211c80319c"
RUN = run_id_for_trace(TRACE)


def _llm(span_id: str, cost: int, tokens: int) -> SpanRecord:
    return SpanRecord(
        trace_id=TRACE, span_id=span_id, parent_id="a" * 16, run_id=RUN, kind="llm",
        name="chat gpt-4o-mini", started_at=T0 + timedelta(seconds=1),
        ended_at=T0 + timedelta(seconds=2), model="gpt-4o-mini", input_tokens=tokens,
        output_tokens=tokens // 2, cost_nusd=cost, status="ok",
    )  # fmt: skip


def _root(status: str = "ok") -> SpanRecord:
    return SpanRecord(
        trace_id=TRACE, span_id="a" * 16, run_id=RUN, kind="agent", name="triage",
        started_at=T0, ended_at=T0 + timedelta(seconds=5), is_root=True, input="q",
        output="a", status=status, error="boom" if status == "error" else None,
        attribution=RunAttribution(agent="triage", version="v3", task_id="T-1", user="alice"),
    )  # fmt: skip


def _run(db: Engine) -> dict:
    with reading(db) as conn:
        return dict(conn.execute(select(runs).where(runs.c.id == RUN)).one()._mapping)


def test_children_before_root_then_late_child_updates_totals(db: Engine) -> None:
    write_spans(db, [_llm("b" * 16, 1000, 100)], now=T0, source="otlp")
    assert _run(db)["status"] == "running"
    write_spans(db, [_root()], now=T0, source="otlp")
    run = _run(db)
    assert (run["status"], run["agent"], run["version"], run["user"]) == (
        "succeeded", "triage", "v3", "alice")
    assert run["cost_nusd"] == 1000 and run["llm_calls"] == 1 and run["span_count"] == 2
    write_spans(db, [_llm("c" * 16, 500, 10)], now=T0, source="otlp")
    run = _run(db)
    assert run["cost_nusd"] == 1500 and run["input_tokens"] == 110 and run["llm_calls"] == 2
    with reading(db) as conn:
        assert conn.execute(select(agent_versions.c.version)).scalars().all() == ["v3"]


def test_ingest_is_idempotent_by_trace_and_span(db: Engine) -> None:
    batch = [_root(), _llm("b" * 16, 1000, 100)]
    write_spans(db, batch, now=T0, source="otlp")
    write_spans(db, batch, now=T0, source="otlp")
    with reading(db) as conn:
        assert len(conn.execute(select(spans.c.span_id)).all()) == 2
    assert _run(db)["cost_nusd"] == 1000


def test_killed_run_stays_killed_when_its_root_arrives(db: Engine) -> None:
    write_spans(db, [_llm("b" * 16, 1, 1)], now=T0, source="gateway")
    with db.begin() as conn:
        assert set_run_status(conn, RUN, "killed", now=T0, reason="budget")
    write_spans(db, [_root("error")], now=T0, source="otlp")
    run = _run(db)
    assert run["status"] == "killed" and run["kill_reason"] == "budget" and run["error"] == "boom"
