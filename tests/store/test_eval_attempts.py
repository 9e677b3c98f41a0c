"""An eval attempt's finish in plain SQL (store.eval_attempts), on SQLite and PostgreSQL: the
spans in hand are stored and counted exactly as the span writer would store them, the run ends
with totals over every span it has, the check sees what the gateways recorded (from the spans in
hand or, when the run has others, read), judges are charged apart, and the next attempt starts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, text, update

from tether.core.assertions import Observed, Result
from tether.core.errors import ConflictError, NotFoundError
from tether.core.eval_suite import parse_suite
from tether.core.records import RunAttribution, SpanRecord
from tether.store import evals
from tether.store.eval_attempts import NextAttempt, complete_attempt, start_attempt
from tether.store.eval_spans import SpansMissing, note_admitted
from tether.store.ingest import ensure_run, write_spans
from tether.store.tables import agent_versions, eval_attempts, runs, spans

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
SUITE = """\
suite: s
agent: bot
repeats: 2
tasks:
  - id: t1
    input: x
    assert: [{name: called, tool_called: crm.lookup}]
"""
BOT = RunAttribution(agent="bot", version="v1", user="ada")


def _eval(db: Engine, target: int | None = None) -> dict[str, Any]:
    return evals.create_eval(
        db, eval_id="eval_a", suite=parse_suite(SUITE), source=SUITE, version="v1", repeats=2,
        target_cost_nusd=target, actor="t", now=NOW,
    )  # fmt: skip


def _span(run_id: str, n: int, kind: str = "llm", **kw: Any) -> SpanRecord:
    values: dict[str, Any] = dict(
        trace_id="e" * 32, span_id=f"{n:016x}", run_id=run_id, kind=kind,
        name="chat mock-small" if kind == "llm" else "crm.lookup",
        started_at=NOW + timedelta(seconds=n), ended_at=NOW + timedelta(seconds=n, milliseconds=9),
        input_tokens=10, output_tokens=5, cost_nusd=1_000 * n, status="ok", attribution=BOT,
    )  # fmt: skip
    values.update(kw)
    return SpanRecord(**values)


class Seen:
    def __init__(self) -> None:
        self.obs: list[Observed] = []

    def __call__(self, obs: Observed) -> list[Result]:
        self.obs.append(obs)
        return [Result("called", "tool_called", bool(obs.tool_calls), "")]


def _finish(db: Engine, ev: dict[str, Any], **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(ok=True, output="out", error=None, agent_ms=3.0, check=Seen(),
                                now=NOW + timedelta(seconds=30))  # fmt: skip
    args.update(kw)
    return complete_attempt(db, ev, "t1", 0, **args)


def _row(db: Engine, table: Any, *where: Any) -> Any:
    with db.connect() as conn:
        return conn.execute(select(table).where(*where)).one()


def test_spans_in_hand_are_stored_as_the_writer_stores_them_and_the_run_ends(db: Engine) -> None:
    ev = _eval(db)
    start_attempt(db, ev, "t1", 0, "run_a", NOW)
    taken = [
        _span("run_a", 1),
        _span(
            "run_a",
            2,
            "tool",
            input='{"id": 7}',
            attributes={"tether.decision": {"decision": "deny"}},
        ),
    ]
    check = Seen()
    row = _finish(db, ev, spans=[*taken, taken[0]], check=check)  # a duplicate counts once
    (obs,) = check.obs
    assert [(c.name, c.arguments, c.outcome) for c in obs.tool_calls] == [
        ("crm.lookup", {"id": 7}, "deny")
    ]
    assert (obs.status, obs.output, obs.llm_calls, obs.cost_nusd, obs.policy_denials) == (
        "succeeded", "out", 1, 3_000, 1,
    )  # fmt: skip
    assert obs.duration_s == 30.0 and obs.input_tokens == 20
    assert row["passed"] is True and row["tools"] == ["crm.lookup"] and row["duration_ms"] == 30_000
    run = _row(db, runs, runs.c.id == "run_a")
    assert (run.status, run.span_count, run.llm_calls, run.tool_calls, run.cost_nusd) == (
        "succeeded", 2, 1, 1, 3_000,
    )  # fmt: skip
    assert run.ended_at == NOW + timedelta(seconds=30) and run.user == "ada"
    assert run.trace_id == "e" * 32 and run.cost_unknown is False
    # the same spans through the span writer's path, into another run: stored alike
    tool = {"input": '{"id": 7}', "attributes": {"tether.decision": {"decision": "deny"}}}
    other = [_span("run_b", 1, trace_id="b" * 32), _span("run_b", 2, "tool", trace_id="b" * 32,
                                                           **tool)]  # fmt: skip
    write_spans(db, other, now=NOW, source="gateway")
    cols = [c for c in spans.c if c.name not in ("run_id", "trace_id")]
    with db.connect() as conn:
        a = conn.execute(select(*cols).where(spans.c.run_id == "run_a").order_by(spans.c.span_id))
        b = conn.execute(select(*cols).where(spans.c.run_id == "run_b").order_by(spans.c.span_id))
        assert a.all() == b.all()
    att = _row(db, eval_attempts, eval_attempts.c.run_id == "run_a")
    assert att.status == "done" and att.results[0]["name"] == "called" and att.agent_ms == 3.0
    ev_row = evals.get_eval(db, "eval_a")
    assert (ev_row["attempts_done"], ev_row["attempts_passed"], ev_row["cost_nusd"]) == (1, 1, 3000)
    if db.dialect.name == "sqlite":  # the text SQLAlchemy's DATETIME stores, not the driver's
        with db.connect() as conn:
            raw = conn.execute(text("SELECT ended_at FROM runs WHERE id = 'run_a'")).scalar()
        assert raw == "2026-12-01 10:00:30.000000"


def test_the_check_reads_the_spans_the_run_has_beyond_those_in_hand(db: Engine) -> None:
    ev = _eval(db, target=1_000)
    start_attempt(db, ev, "t1", 0, "run_a", NOW)
    # the MCP gateway stored a tool span before (in a trace of its own); a span of the LLM
    # call's trace stored under that trace's default run (an SDK's, before any span named the
    # run) moves to the run with the finish
    write_spans(db, [_span("run_a", 5, "tool", trace_id="d" * 32)], now=NOW, source="gateway")
    write_spans(db, [_span("run_" + "e" * 32, 6, "other", name="sdk step", cost_nusd=None)],
                now=NOW, source="otlp")  # fmt: skip
    with db.connect() as conn:
        assert conn.execute(select(runs.c.id).where(runs.c.id == "run_" + "e" * 32)).all()
    check = Seen()
    row = _finish(db, ev, spans=[_span("run_a", 1)], check=check)
    (obs,) = check.obs
    assert [c.name for c in obs.tool_calls] == ["crm.lookup"]
    assert (obs.llm_calls, obs.cost_nusd) == (1, 6_000)
    run = _row(db, runs, runs.c.id == "run_a")
    assert (run.span_count, run.tool_calls) == (3, 1)
    with db.connect() as conn:  # the trace's default run is gone, its span moved
        assert conn.execute(select(runs.c.id).where(runs.c.id == "run_" + "e" * 32)).all() == []
    # passed, but above the target cost: not counted as a success at target
    assert row["passed"] is True and evals.get_eval(db, "eval_a")["attempts_passed"] == 0


def test_a_killed_run_stays_killed_and_judges_are_charged_apart(db: Engine) -> None:
    ev = _eval(db)
    start_attempt(db, ev, "t1", 0, "run_a", NOW)
    with db.begin() as conn:
        killed = {"status": "killed", "kill_reason": "runaway",
                  "ended_at": NOW + timedelta(seconds=2)}  # fmt: skip
        conn.execute(update(runs).where(runs.c.id == "run_a").values(**killed))
        ensure_run(conn, "run_j", trace_id=None, attribution=RunAttribution(agent="tether-judge"),
                   started_at=NOW, source="api", now=NOW)  # fmt: skip
    judge = _span("run_j", 3, trace_id="f" * 32, attribution=RunAttribution(agent="tether-judge"))
    check = Seen()
    row = _finish(db, ev, ok=False, error="boom", judge_run_ids=["run_j"], spans=[judge],
                  check=check)  # fmt: skip
    (obs,) = check.obs
    assert obs.killed and obs.kill_reason == "runaway" and obs.status == "killed"
    assert obs.duration_s == 2.0  # the kill's end is kept
    assert row["judge_cost_nusd"] == 3_000 and row["cost_nusd"] == 0 and row["error"] == "boom"
    judge_run = _row(db, runs, runs.c.id == "run_j")
    assert (judge_run.status, judge_run.cost_nusd, judge_run.llm_calls) == ("succeeded", 3000, 1)
    assert evals.get_eval(db, "eval_a")["judge_cost_nusd"] == 3_000


def test_strict_writes_nothing_while_an_admitted_call_has_no_span(db: Engine) -> None:
    ev = _eval(db)
    start_attempt(db, ev, "t1", 0, "run_a", NOW)
    note_admitted(db, "run_a", NOW)
    note_admitted(db, "run_a", NOW)
    with pytest.raises(SpansMissing) as missing:
        _finish(db, ev, spans=[_span("run_a", 1)], strict=True)
    assert missing.value.missing == 1
    with db.connect() as conn:
        assert conn.execute(select(spans.c.span_id)).all() == []
    assert _row(db, eval_attempts, eval_attempts.c.run_id == "run_a").status == "running"
    row = _finish(db, ev, spans=[_span("run_a", 1)])  # not strict: checked, and says so
    assert row["missing_spans"] == 1
    with pytest.raises(ConflictError):
        _finish(db, ev)


def test_the_finish_starts_the_next_attempt_unless_it_is_done(db: Engine) -> None:
    ev = _eval(db)
    start_attempt(db, ev, "t1", 0, "run_a", NOW)
    later = NOW + timedelta(seconds=30)
    nxt = NextAttempt("t1", 1, "run_n", {"tools": {"crm.lookup": "ada"}})
    row = _finish(db, ev, then=nxt)
    assert row["next"]["run_id"] == "run_n" and row["next"]["status"] == "running"
    run = _row(db, runs, runs.c.id == "run_n")
    assert (run.agent, run.version, run.task_id, run.status, run.source) == (
        "bot", "v1", "t1", "running", "eval",
    )  # fmt: skip
    assert run.started_at == later and run.cost_unknown is False and run.span_count == 0
    assert run.attributes == {"tether.eval.id": "eval_a", "tether.eval.suite": "s",
                              "tether.eval.task": "t1", "tether.eval.attempt": 1,
                              "tether.eval.fixtures": {"tools": {"crm.lookup": "ada"}}}  # fmt: skip
    version = _row(db, agent_versions, agent_versions.c.agent == "bot")
    assert version.last_seen_at == later
    att = _row(db, eval_attempts, eval_attempts.c.run_id == "run_n")
    assert (att.status, att.cost_nusd, att.passed, att.started_at) == ("running", 0, None, later)
    # an interrupted attempt starts again with a new run; a done one is not started
    restarted = start_attempt(db, ev, "t1", 1, "run_r", later)
    assert restarted["run_id"] == "run_r"
    assert _row(db, eval_attempts, eval_attempts.c.attempt == 1).run_id == "run_r"
    again = complete_attempt(db, ev, "t1", 1, ok=True, output="o", error=None, agent_ms=None,
                             check=Seen(), now=later,
                             then=NextAttempt("t1", 0, "run_x"))  # fmt: skip
    assert again["next"] is None
    with db.connect() as conn:
        assert conn.execute(select(runs.c.id).where(runs.c.id == "run_x")).all() == []
    with pytest.raises(ConflictError):
        start_attempt(db, ev, "t1", 0, "run_y", later)


def test_a_run_the_finish_cannot_find_is_an_error(db: Engine) -> None:
    ev = _eval(db)
    start_attempt(db, ev, "t1", 0, "run_a", NOW)
    with db.begin() as conn:
        conn.execute(runs.delete().where(runs.c.id == "run_a"))
        conn.execute(insert(runs).values(
            id="run_other", status="running", started_at=NOW, updated_at=NOW, agent="bot",
        ))  # fmt: skip
    with pytest.raises(NotFoundError, match="no run run_a"):
        _finish(db, ev)
    assert _row(db, eval_attempts, eval_attempts.c.run_id == "run_a").status == "running"
