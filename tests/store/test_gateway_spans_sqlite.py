"""store.gateway_spans_sqlite: a batch of gateway spans leaves the runs exactly as write_spans_in
would (totals, attribution, start, agents seen, the spans' stored values); it declines, storing
nothing, whenever write_spans_in must do more; a run of its own is created whole."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from tests.store.test_gateway_spans import T0, _count, _ensure, _row, _span
from tether.core.records import RunAttribution, SpanRecord
from tether.store.gateway_spans_sqlite import store_gateway_spans, write_gateway_spans_sqlite
from tether.store.ingest import write_spans
from tether.store.tables import agent_versions, agents, spans
from tether.store.writelock import span_writer


@pytest.fixture
def lite(sqlite_db: Engine) -> Engine:
    return sqlite_db


def _write(db: Engine, batch: list[SpanRecord], now: Any = T0) -> bool:
    with span_writer(db):
        return write_gateway_spans_sqlite(db, batch, now, nowait=False)


def test_a_batch_leaves_its_run_as_write_spans_would(lite: Engine) -> None:
    db = lite
    _ensure(db, agent="gw")  # the gateway's run: agent known, version and task not yet
    first = [_span(1, started=T0), _span(2), replace(_span(3), kind="embedding", cost_unknown=True)]
    later = [_span(4, attribution=RunAttribution(agent="gw", version="v2", task_id="t1"))]
    assert _write(db, first)
    assert store_gateway_spans(db, later, T0 + timedelta(seconds=5), nowait=True)
    mine = _row(db)
    assert (mine["span_count"], mine["llm_calls"], mine["tool_calls"]) == (4, 3, 0)
    assert (mine["cost_nusd"], mine["input_tokens"], mine["output_tokens"]) == (28, 40, 12)
    assert mine["cached_tokens"] == 4 and mine["cost_unknown"] is True
    assert mine["started_at"] == T0 and (mine["version"], mine["task_id"]) == ("v1", "t1")
    assert mine["status"] == "running" and mine["updated_at"] == T0 + timedelta(seconds=5)
    _ensure(db, "run_twin", agent="gw")
    twins = [replace(s, run_id="run_twin", trace_id="8" * 32) for s in first]
    write_spans(db, twins, now=T0, source="gateway")
    write_spans(db, [replace(later[0], run_id="run_twin", trace_id="8" * 32)],
                now=T0 + timedelta(seconds=5), source="gateway")  # fmt: skip
    twin = _row(db, "run_twin")
    for name in set(mine) - {"id", "trace_id"}:
        assert mine[name] == twin[name], name
    cols = [c for c in spans.c if c.name not in ("trace_id", "run_id")]
    with db.connect() as conn:
        got = {r.run_id: r[1:] for r in conn.execute(
            select(spans.c.run_id, *cols).where(spans.c.span_id == f"{1:016x}"))}  # fmt: skip
        raw = {r[0]: r[1:] for r in conn.exec_driver_sql(
            "SELECT run_id, started_at, attributes, cost_unknown FROM spans "
            "WHERE span_id = ?", (f"{1:016x}",))}  # fmt: skip
        seen = conn.execute(select(agents.c.last_seen_at).where(agents.c.name == "gw")).scalar()
        versions = set(conn.execute(select(agent_versions.c.version)).scalars())
    assert got["run_gw"] == got["run_twin"]  # stored alike, JSON attributes included
    assert raw["run_gw"] == raw["run_twin"]  # byte for byte: timestamps, JSON text, booleans
    assert seen == T0 + timedelta(seconds=5) and versions == {"v1", "v2"}


def test_it_declines_and_stores_nothing_when_write_spans_must_decide(lite: Engine) -> None:
    db = lite
    _ensure(db)
    write_spans(db, [_span(1)], now=T0, source="otlp")  # span 1 is stored already
    # trace 9..9 has spans of its own default run stored: a named run's span would move them
    write_spans(db, [_span(5, "run_" + "9" * 32, trace="9" * 32)], now=T0, source="otlp")
    # trace 6..6 has spans of a named run: a span of its default run would be adopted
    _ensure(db, "run_named")
    write_spans(db, [_span(6, "run_named", trace="6" * 32)], now=T0, source="otlp")
    _ensure(db, "run_" + "6" * 32)  # it exists: only the trace's other run makes it decline
    got = [
        _write(db, [_span(2), _span(1, cost=99)]),
        _write(db, [_span(3), _span(4, "run_missing")]),
        _write(db, [_span(7, trace="9" * 32)]),
        _write(db, [_span(8, "run_" + "6" * 32, trace="6" * 32)]),
        _write(db, [_span(9)]),
    ]
    assert got == [False, False, False, False, True]
    assert _count(db) == 4  # spans 1, 5, 6 and 9: the declined batches stored nothing
    mine = _row(db)
    assert (mine["span_count"], mine["cost_nusd"]) == (2, 14)


def test_a_run_of_its_own_is_created_whole_as_write_spans_would(lite: Engine) -> None:
    db = lite
    ok = replace(_span(1, "run_own", trace="1" * 32), is_root=True,
                 attribution=RunAttribution(agent="gw", user="u1"))  # fmt: skip
    failed = replace(_span(2, "run_bad", trace="2" * 32), is_root=True, status="error",
                     error="upstream 500")  # fmt: skip
    child = replace(_span(3, "run_bad", trace="2" * 32), started_at=T0 - timedelta(seconds=1))
    _ensure(db, "run_streamed")
    streamed = replace(_span(4, "run_streamed", trace="4" * 32), is_root=True)
    assert [_write(db, [ok, failed, child]), _write(db, [streamed])] == [True, False]
    twins = [replace(r, run_id=r.run_id + "_twin", trace_id=r.trace_id.replace("1", "a")
                     .replace("2", "b")) for r in (ok, failed, child)]  # fmt: skip
    write_spans(db, twins, now=T0, source="gateway")
    for run_id in ("run_own", "run_bad"):
        mine, twin = _row(db, run_id), _row(db, run_id + "_twin")
        for name in set(mine) - {"id", "trace_id"}:
            assert mine[name] == twin[name], (run_id, name)
    assert _row(db, "run_own")["status"] == "succeeded" and _row(db, "run_own")["user"] == "u1"
    bad = _row(db, "run_bad")
    assert (bad["status"], bad["error"], bad["span_count"]) == ("failed", "upstream 500", 2)
    assert bad["started_at"] == T0 - timedelta(seconds=1)


def test_a_big_batch_in_multi_row_statements(lite: Engine) -> None:
    """More spans than one statement takes (256 rows), over many runs: all stored, each run's
    totals its own."""
    db = lite
    for k in range(7):
        _ensure(db, f"run_{k}")
    batch = [_span(i, f"run_{i % 7}", trace=f"{i % 7:032x}") for i in range(300)]
    assert _write(db, batch)
    assert _count(db) == 300
    assert sum(_row(db, f"run_{k}")["span_count"] for k in range(7)) == 300
    assert _row(db, "run_3")["cost_nusd"] == 7 * len(range(3, 300, 7))
