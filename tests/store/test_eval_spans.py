"""Counting an eval attempt's LLM calls that have no span stored yet (store.eval_spans), on
SQLite and PostgreSQL: budget holds and the gateway's records of calls that took none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select

from tether.core.records import SpanRecord
from tether.store import budgets
from tether.store.eval_spans import gap, is_eval_run, note_admitted
from tether.store.ingest import write_spans
from tether.store.tables import reservations

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _llm_span(run_id: str, n: int) -> SpanRecord:
    return SpanRecord(
        trace_id="b" * 32, span_id=f"{n:016x}", run_id=run_id, kind="llm", name="mock-small",
        started_at=NOW, ended_at=NOW, status="ok",
    )  # fmt: skip


def test_a_call_recorded_without_a_hold_is_awaited_until_its_span_is_stored(db: Engine) -> None:
    note_admitted(db, "run_a", NOW)
    note_admitted(db, "run_a", NOW)
    note_admitted(db, "run_judge", NOW)
    assert gap(db, ["run_a"]) == 2
    assert gap(db, ["run_a", "run_judge"]) == 3
    assert gap(db, ["run_a"], pending=1) == 1  # one taken from this process's writer
    write_spans(db, [_llm_span("run_a", 1)], now=NOW, source="gateway")
    assert gap(db, ["run_a"]) == 1
    write_spans(db, [_llm_span("run_a", 2)], now=NOW, source="gateway")
    assert gap(db, ["run_a"]) == 0
    assert gap(db, ["run_other"]) == 0


def test_a_call_record_holds_nothing_and_no_sweep_releases_it(db: Engine) -> None:
    note_admitted(db, "run_a", NOW)
    assert budgets.sweep_expired(db, NOW + timedelta(hours=1)) == 0
    with db.connect() as conn:
        row = conn.execute(select(reservations).where(reservations.c.run_id == "run_a")).one()
    assert (row.status, row.amount_nusd, row.tokens, row.scopes) == ("settled", 0, 0, [])
    # dropped a day after, like every finished hold
    budgets.sweep_expired(db, NOW + timedelta(days=2))
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(reservations)).scalar_one() == 0


def test_eval_runs_are_the_tagged_ones_and_the_judges() -> None:
    assert is_eval_run({"tether.eval.id": "eval_1"}, "bot")
    assert is_eval_run(None, "tether-judge")
    assert not is_eval_run({"other": 1}, "bot")
    assert not is_eval_run(None, None)
