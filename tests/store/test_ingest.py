from __future__ import annotations

from dataclasses import replace
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
        "succeeded",
        "triage",
        "v3",
        "alice",
    )
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


def test_every_column_round_trips_through_the_fast_insert(db: Engine) -> None:
    rec = SpanRecord(
        trace_id=TRACE, span_id="d" * 16, parent_id="a" * 16, run_id=RUN, kind="llm",
        name="n" * 600, started_at=T0 + timedelta(microseconds=123456),
        ended_at=T0 + timedelta(seconds=3, microseconds=7), input="héllo ✓", output="",
        model="gpt-4o", model_served="gpt-4o-2024-08-06", input_tokens=10, output_tokens=0,
        cached_tokens=4, cost_nusd=123, cost_unknown=True, ttft_ms=12.5, status="error",
        error="boom", attributes={"k": "✓", "n": 1.5, "nested": {"a": [1, None, True]}},
    )  # fmt: skip
    bare = SpanRecord(trace_id=TRACE, span_id="e" * 16, run_id=RUN, kind="tool", name="t",
                      started_at=T0)  # fmt: skip
    write_spans(db, [rec, bare], now=T0, source="sdk")
    with reading(db) as conn:
        rows = {r.span_id: r._mapping for r in conn.execute(select(spans))}
    got = rows["d" * 16]
    assert got["name"] == "n" * 500
    assert got["started_at"] == rec.started_at and got["ended_at"] == rec.ended_at
    assert got["latency_ms"] == rec.latency_ms
    for name in ("parent_id", "run_id", "kind", "input", "output", "model", "model_served",
                 "input_tokens", "output_tokens", "cached_tokens", "cost_nusd", "cost_unknown",
                 "ttft_ms", "status", "error", "attributes"):  # fmt: skip
        assert got[name] == getattr(rec, name), name
    other = rows["e" * 16]
    assert (other["ended_at"], other["attributes"], other["cost_unknown"]) == (None, None, False)


def test_new_and_existing_runs_get_the_same_totals(db: Engine) -> None:
    # one run arrives whole (created with totals from the batch), the other in three parts
    whole = [_root(), _llm("b" * 16, 1000, 100), _llm("c" * 16, 500, 10)]
    write_spans(db, whole, now=T0, source="otlp")
    first = _run(db)
    with db.begin() as conn:
        conn.execute(runs.delete())
        conn.execute(spans.delete())
    for part in ([whole[1]], [whole[0]], [whole[2], whole[1]]):
        write_spans(db, part, now=T0, source="otlp")
    second = _run(db)
    for name in ("status", "agent", "version", "task_id", "user", "input", "output", "ended_at",
                 "input_tokens", "output_tokens", "cost_nusd", "llm_calls", "tool_calls",
                 "span_count", "cost_unknown"):  # fmt: skip
        assert first[name] == second[name], name
    assert (second["cost_nusd"], second["span_count"], second["llm_calls"]) == (1500, 3, 2)


def test_concurrent_batches_of_one_run_count_every_span(db: Engine) -> None:
    import threading

    def llm(i: int) -> SpanRecord:
        return replace(_llm(f"{i:016x}", 7, 1), span_id=f"{i:016x}")

    batches = [[llm(i * 10 + j) for j in range(10)] for i in range(1, 9)]
    barrier = threading.Barrier(len(batches))
    errors: list[BaseException] = []

    def work(batch: list[SpanRecord]) -> None:
        barrier.wait()
        try:
            write_spans(db, batch, now=T0, source="otlp")
        except BaseException as exc:  # reported below, with the failing batch
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    run = _run(db)
    assert (run["span_count"], run["llm_calls"], run["cost_nusd"]) == (80, 80, 560)


def _named(span_id: str, *, root: bool, run_id: str) -> SpanRecord:
    base = _root() if root else _llm(span_id, 100, 10)
    return replace(base, span_id=span_id, run_id=run_id)


def test_children_sent_before_a_root_that_names_the_run_move_to_it(db: Engine) -> None:
    # batch 1: children, mapped to the trace's default run (they carry no tether.run_id)
    write_spans(db, [_llm("b" * 16, 100, 10), _llm("c" * 16, 200, 10)], now=T0, source="otlp")
    # batch 2: the root, which names its run
    write_spans(db, [_named("a" * 16, root=True, run_id="run_custom")], now=T0, source="otlp")
    with reading(db) as conn:
        ids = {r.id: r for r in conn.execute(select(runs))}
        owners = set(conn.execute(select(spans.c.run_id)).scalars())
    assert set(ids) == {"run_custom"} and owners == {"run_custom"}
    run = ids["run_custom"]
    assert (run.cost_nusd, run.span_count, run.llm_calls, run.status) == (300, 3, 2, "succeeded")


def test_children_sent_after_a_root_that_names_the_run_join_it(db: Engine) -> None:
    write_spans(db, [_named("a" * 16, root=True, run_id="run_custom")], now=T0, source="otlp")
    write_spans(db, [_llm("b" * 16, 100, 10)], now=T0, source="otlp")
    with reading(db) as conn:
        assert set(conn.execute(select(runs.c.id)).scalars()) == {"run_custom"}
    with reading(db) as conn:
        run = conn.execute(select(runs).where(runs.c.id == "run_custom")).one()
    assert (run.cost_nusd, run.span_count) == (100, 2)


def test_root_attribution_replaces_what_earlier_children_implied(db: Engine) -> None:
    """Children first (only the resource's service.name to go by), then the root with tether.*."""
    child = replace(_llm("e" * 16, 10, 10), attribution=RunAttribution(agent="my-service"))
    write_spans(db, [child], now=T0, source="otlp")
    assert _run(db)["agent"] == "my-service"
    write_spans(db, [_root()], now=T0, source="otlp")
    run = _run(db)
    assert (run["agent"], run["version"], run["task_id"], run["user"]) == (
        "triage", "v3", "T-1", "alice")  # fmt: skip


def test_a_batch_of_many_runs_and_agents_is_stored_whole_with_each_runs_totals(db: Engine) -> None:
    """301 runs of two spans (602 rows: SQLite writes them as statements of 256, 256, 64, 16, 8
    and 2 rows; the runs as 256, 32, 8, 4 and 1), 7 agents in 3 versions each."""
    batch: list[SpanRecord] = []
    for i in range(301):
        trace = f"{i:032x}"
        who = RunAttribution(agent=f"agent-{i % 7}", version=f"v{i % 3}", task_id=f"T-{i}",
                             user="bob")  # fmt: skip
        root = replace(_root(), trace_id=trace, run_id=run_id_for_trace(trace), attribution=who,
                       started_at=T0 + timedelta(seconds=i), input=f"q{i}")  # fmt: skip
        batch += [root, replace(_llm("b" * 16, i, 10), trace_id=trace, run_id=root.run_id,
                                started_at=root.started_at, ended_at=root.ended_at)]  # fmt: skip
    write_spans(db, batch, now=T0, source="otlp")
    with reading(db) as conn:
        stored = {(r.trace_id, r.span_id) for r in conn.execute(select(spans))}
        got = {r.id: r for r in conn.execute(select(runs))}
        versions = set(conn.execute(select(agent_versions.c.agent, agent_versions.c.version)))
    assert stored == {(r.trace_id, r.span_id) for r in batch}
    assert len(got) == 301 and len(versions) == 21
    for i in (0, 255, 256, 300):
        run = got[run_id_for_trace(f"{i:032x}")]
        assert (run.cost_nusd, run.span_count, run.llm_calls, run.status) == (i, 2, 1, "succeeded")
        assert (run.agent, run.version, run.task_id, run.input) == (
            f"agent-{i % 7}", f"v{i % 3}", f"T-{i}", f"q{i}")  # fmt: skip
        assert run.started_at == T0 + timedelta(seconds=i) and run.cost_unknown is False


def test_a_run_created_by_a_tool_result_and_by_its_spans_at_once_never_deadlocks(
    db: Engine,
) -> None:
    """The SDK records a tool's result (ensure_run, then the run's tags) while its spans arrive
    (agents, then runs): both take the agent's row and the run's row, in the same order, so
    PostgreSQL never aborts one of them as a deadlock (it did: a 500 on /runs/{id}/values)."""
    import threading

    from tether.store.ingest import ensure_run
    from tether.store.tools import add_run_tags

    errors: list[BaseException] = []

    def tagged(run_id: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            with db.begin() as conn:
                ensure_run(conn, run_id, trace_id=None, attribution=RunAttribution(agent="triage"),
                           started_at=T0, source="gateway", now=T0)  # fmt: skip
                add_run_tags(conn, run_id, {"read"}, now=T0)
        except BaseException as exc:  # reported below
            errors.append(exc)

    def ingested(run_id: str, barrier: threading.Barrier) -> None:
        root = replace(_root(), trace_id=f"{int(run_id.rsplit('_', 1)[1]) + 1:032x}", run_id=run_id)
        barrier.wait()
        try:
            write_spans(db, [root], now=T0, source="otlp")
        except BaseException as exc:  # reported below
            errors.append(exc)

    for i in range(40):
        run_id = f"run_race_{i}"
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=f, args=(run_id, barrier)) for f in (tagged, ingested)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    with reading(db) as conn:
        stored = conn.execute(select(runs.c.id).where(runs.c.id.like("run_race_%"))).all()
    assert len(stored) == 40
