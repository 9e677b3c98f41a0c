"""An eval attempt's start and finish, each one transaction of plain SQL given to the driver.

The finish, in the transaction that checks the attempt: the gateway's spans of it that the
server took from its span writer are stored, each of its runs (the attempt's, its judges') is
ended and its totals recomputed from its stored spans in one UPDATE that also answers what the
check reads (status, totals, pending approvals, budget holds and LLM spans stored), the tool
calls and refusals come from the spans in hand when they are all the run has (else they are
read), then the attempt, the eval's counters and the runner's next attempt are written: about
ten statements. Why not SQLAlchemy Core: building and executing its 25 statements per finish
was most of the server's CPU per attempt (py-spy of bench/evals.py). Values bound are those the
column types bind (their own processors), so rows are stored and read back alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import Dialect

from tether.core.assertions import Observed, Result, ToolCall
from tether.core.errors import BadRequestError, ConflictError, NotFoundError
from tether.core.records import SpanRecord, run_id_for_trace
from tether.store.eval_spans import EVAL_ID_TAG, JUDGE_AGENT, SpansMissing
from tether.store.ingest import upsert_spans, write_spans_in
from tether.store.tables import TS, eval_attempts

# the other eval tags on an attempt's run (beside EVAL_ID_TAG), and its fixtures, read by the
# LLM and MCP gateways
SUITE_TAG, TASK_TAG, ATTEMPT_TAG = "tether.eval.suite", "tether.eval.task", "tether.eval.attempt"
FIXTURES_TAG = "tether.eval.fixtures"
_TERMINAL = "('succeeded', 'failed', 'killed')"  # core.records.TERMINAL_STATUSES

_ATTEMPT = (
    "SELECT run_id, status, started_at FROM eval_attempts "
    "WHERE eval_id = :e AND task_id = :t AND attempt = :a"
)
# spans of these traces stored under the trace's default run, which a span naming its run
# moves there (store.ingest): then the generic write path runs
_PROBE = "SELECT 1 FROM spans WHERE trace_id IN ({ids}) AND run_id = 'run_' || trace_id LIMIT 1"
# one UPDATE per run: ended as the agent said (a run already ended, or killed, keeps its end),
# its totals summed over its stored spans, what its spans implied filled in where the run is
# silent; it answers what the check reads. SET expressions see the row as it was.
_END_RUN = f"""UPDATE runs SET
 (input_tokens, output_tokens, cached_tokens, cost_nusd, cost_unknown, llm_calls, tool_calls,
  span_count) = (SELECT COALESCE(SUM(s.input_tokens), 0), COALESCE(SUM(s.output_tokens), 0),
  COALESCE(SUM(s.cached_tokens), 0), COALESCE(SUM(s.cost_nusd), 0),
  COALESCE(MAX(CASE WHEN s.cost_unknown THEN 1 ELSE 0 END), 0) = 1,
  COALESCE(SUM(CASE WHEN s.kind = 'llm' THEN 1 ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN s.kind = 'tool' THEN 1 ELSE 0 END), 0), COUNT(*)
  FROM spans s WHERE s.run_id = runs.id),
 status = CASE WHEN status IN {_TERMINAL} THEN status ELSE :status END,
 ended_at = CASE WHEN status IN {_TERMINAL} THEN ended_at ELSE :now END,
 error = CASE WHEN status IN {_TERMINAL} THEN error ELSE COALESCE(:reason, error) END,
 output = :output, agent = COALESCE(agent, :agent), version = COALESCE(version, :version),
 task_id = COALESCE(task_id, :task_id), "user" = COALESCE("user", :user),
 trace_id = COALESCE(trace_id, :trace_id),
 started_at = CASE WHEN started_at > COALESCE(:first, started_at) THEN :first ELSE started_at END,
 updated_at = :now
WHERE id = :id
RETURNING status, output, cost_nusd, llm_calls, input_tokens, output_tokens, started_at,
 ended_at, kill_reason, error, span_count, agent,
 (SELECT COUNT(*) FROM approvals a WHERE a.run_id = runs.id AND a.status = 'pending'),
 (SELECT COUNT(*) FROM reservations r WHERE r.run_id = runs.id),
 (SELECT COUNT(*) FROM spans s WHERE s.run_id = runs.id AND s.kind IN ('llm', 'embedding'))"""
_SPANS_OF = "SELECT kind, name, input, attributes FROM spans WHERE run_id = :r ORDER BY started_at"
_DONE = (
    "UPDATE eval_attempts SET status = 'done', passed = :passed, cost_nusd = :cost, "
    "judge_cost_nusd = :judge_cost, duration_ms = :duration_ms, agent_ms = :agent_ms, "
    "results = :results, tools = :tools, error = :error, ended_at = :now "
    "WHERE eval_id = :e AND task_id = :t AND attempt = :a AND status <> 'done'"
)
_COUNT = (
    "UPDATE evals SET attempts_done = attempts_done + 1, "
    "attempts_passed = attempts_passed + :passed, cost_nusd = cost_nusd + :cost, "
    "judge_cost_nusd = judge_cost_nusd + :judge_cost WHERE id = :e"
)
# an attempt starts (or starts again, interrupted) unless it is done: then nothing is written
_CLAIM = (
    "INSERT INTO eval_attempts (eval_id, task_id, attempt, run_id, status, passed, cost_nusd, "
    "judge_cost_nusd, results, error, started_at, ended_at) "
    "VALUES (:e, :t, :a, :r, 'running', NULL, 0, 0, NULL, NULL, :now, NULL) "
    "ON CONFLICT (eval_id, task_id, attempt) DO UPDATE SET run_id = excluded.run_id, "
    "status = 'running', passed = NULL, results = NULL, error = NULL, "
    "started_at = excluded.started_at, ended_at = NULL WHERE eval_attempts.status <> 'done' "
    "RETURNING attempt"
)
_NEW_RUN = (
    "INSERT INTO runs (id, task_id, agent, version, status, started_at, input_tokens, "
    "output_tokens, cached_tokens, cost_nusd, cost_unknown, llm_calls, tool_calls, span_count, "
    "source, attributes, updated_at) VALUES (:id, :task_id, :agent, :version, 'running', :now, "
    "0, 0, 0, 0, :no, 0, 0, 0, 'eval', :attributes, :now) "
    "ON CONFLICT (id) DO UPDATE SET attributes = excluded.attributes"
)
_AGENT = (
    "INSERT INTO agents (name, created_at, last_seen_at) VALUES (:agent, :now, :now) "
    "ON CONFLICT (name) DO UPDATE SET last_seen_at = excluded.last_seen_at"
)
_VERSION = (
    "INSERT INTO agent_versions (agent, version, created_at, last_seen_at) "
    "VALUES (:agent, :version, :now, :now) "
    "ON CONFLICT (agent, version) DO UPDATE SET last_seen_at = excluded.last_seen_at"
)


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class _Sql:
    """The statements in the driver's parameter style, and the column types' processors."""

    text: dict[str, str]
    ts: Callable[[datetime | None], Any]
    ts_out: Callable[[Any], datetime | None]
    json: Callable[[Any], Any]
    json_out: Callable[[Any], Any]
    pyformat: bool

    def probe(self, n: int) -> str:
        return self._style(_PROBE.format(ids=", ".join(f":t{i}" for i in range(n))))

    def _style(self, sql: str) -> str:
        return re.sub(r":(\w+)", r"%(\1)s", sql) if self.pyformat else sql


@cache
def _sql(name: str, dialect: Dialect) -> _Sql:
    pyformat = dialect.paramstyle in ("pyformat", "format")
    statements = {"attempt": _ATTEMPT, "end_run": _END_RUN, "spans_of": _SPANS_OF, "done": _DONE,
                  "count": _COUNT, "claim": _CLAIM, "new_run": _NEW_RUN, "agent": _AGENT,
                  "version": _VERSION}  # fmt: skip
    text = {k: re.sub(r":(\w+)", r"%(\1)s", v) if pyformat else v for k, v in statements.items()}
    # the dialect's own types (SQLite's DATETIME renders the text SQLAlchemy stores)
    ts, js = TS.dialect_impl(dialect), eval_attempts.c.results.type.dialect_impl(dialect)
    return _Sql(
        text=text,
        ts=ts.bind_processor(dialect) or _identity,
        ts_out=ts.result_processor(dialect, None) or _identity,
        json=js.bind_processor(dialect) or _identity,  # JSON, as runs.attributes
        json_out=js.result_processor(dialect, None) or _identity,
        pyformat=pyformat,
    )


def _cursor(conn: Connection) -> tuple[Any, _Sql]:
    """A DBAPI cursor in `conn`'s transaction, and the statements for its dialect."""
    return conn.connection.cursor(), _sql(conn.dialect.name, conn.dialect)


@dataclass(frozen=True)
class NextAttempt:
    """An attempt to start in the transaction that finishes another (one round trip a time)."""

    task_id: str
    attempt: int
    run_id: str
    fixtures: dict[str, Any] | None = None


def start_attempt(
    engine: Engine, ev: dict[str, Any], task_id: str, attempt: int, run_id: str, now: datetime,
    fixtures: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Creates the attempt's run (running, tagged, with the task's fixtures for the gateways)
    and its row, in one transaction; returns the row. A finished attempt is a ConflictError;
    an interrupted one starts again with a new run."""
    with engine.begin() as conn:
        return start_attempt_in(conn, ev, NextAttempt(task_id, attempt, run_id, fixtures), now)


def start_attempt_in(
    conn: Connection, ev: dict[str, Any], a: NextAttempt, now: datetime
) -> dict[str, Any]:
    """start_attempt in the caller's transaction."""
    row = start_in(conn, ev, a, now)
    if row is None:
        raise ConflictError(
            f"attempt {a.attempt} of {a.task_id} in {ev['id']} is already done",
            code="attempt_done",
        )
    return row


def start_in(
    conn: Connection, ev: dict[str, Any], a: NextAttempt, now: datetime, *, noted: bool = False
) -> dict[str, Any] | None:
    """start_attempt's writes in the caller's transaction; None if the attempt is done.
    `noted`: the caller has noted the eval's agent and version already (`note_agent`)."""
    cur, sql = _cursor(conn)
    ts = sql.ts(now)
    agent, version = ev["agent"], ev["version"]
    if not noted:
        note_agent(conn, ev, now)
    key = {"e": ev["id"], "t": a.task_id, "a": a.attempt}
    cur.execute(sql.text["claim"], {**key, "r": a.run_id, "now": ts})
    if cur.fetchone() is None:
        return None
    tags: dict[str, Any] = {EVAL_ID_TAG: ev["id"], SUITE_TAG: ev["suite"], TASK_TAG: a.task_id,
                            ATTEMPT_TAG: a.attempt}  # fmt: skip
    if a.fixtures:
        tags[FIXTURES_TAG] = a.fixtures
    cur.execute(sql.text["new_run"], {
        "id": a.run_id, "task_id": a.task_id, "agent": agent, "version": version, "now": ts,
        "no": False, "attributes": sql.json(tags),
    })  # fmt: skip
    return {
        "eval_id": ev["id"], "task_id": a.task_id, "attempt": a.attempt, "run_id": a.run_id,
        "status": "running", "started_at": now, "passed": None, "results": None, "error": None,
        "ended_at": None, "cost_nusd": 0, "judge_cost_nusd": 0, "duration_ms": None,
        "agent_ms": None, "tools": None,
    }  # fmt: skip


def note_agent(conn: Connection, ev: dict[str, Any], now: datetime) -> None:
    """The eval's agent and version seen now. First in a transaction that also locks runs: the
    span writer notes agents before it locks its runs (one lock order on PostgreSQL)."""
    cur, sql = _cursor(conn)
    ts = sql.ts(now)
    cur.execute(sql.text["agent"], {"agent": ev["agent"], "now": ts})
    cur.execute(sql.text["version"], {"agent": ev["agent"], "version": ev["version"], "now": ts})


Check = Callable[[Observed], list[Result]]


@dataclass(frozen=True)
class _Ended:
    """A run as its end UPDATE answered it."""

    observed: Observed
    agent: str | None
    span_count: int
    held: int
    llm_spans: int


def complete_attempt(
    engine: Engine, ev: dict[str, Any], task_id: str, attempt: int, **kw: Any
) -> dict[str, Any]:
    """complete_in in a transaction of its own."""
    with engine.begin() as conn:
        return complete_in(conn, ev, task_id, attempt, **kw)


def complete_in(
    conn: Connection,
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
    """The agent finished an attempt: in the caller's transaction the gateway's `spans` of it not
    yet stored are written, its run ends, what the gateways recorded is checked (`check`), the
    judges' runs end and are charged apart, and the attempt and the eval's counters are
    written; then the attempt `then`, if given, starts. Returns the attempt's row, with that
    next attempt's under "next" (None if it was already done), and under "missing_spans" the
    admitted LLM calls with no span stored (another process's writer has not written them yet:
    store.eval_spans); `strict` raises SpansMissing then, writing nothing."""
    key = {"e": ev["id"], "t": task_id, "a": attempt}
    if then is not None:
        note_agent(conn, ev, now)
    cur, sql = _cursor(conn)
    own_run, started_at = _running(cur, sql, key, run_id)
    by_run = _store_spans(conn, cur, sql, spans, [own_run, *judge_run_ids], now)
    own = _end_run(cur, sql, own_run, by_run.get(own_run, ()), now=now, ok=ok, output=output,
                   reason=None if ok else error)  # fmt: skip
    judges = {rid: _end_run(cur, sql, rid, by_run.get(rid, ()), now=now, ok=True,
                            output=None, reason=None)
              for rid in judge_run_ids if rid != own_run}  # fmt: skip
    ended = [own, *judges.values()]
    missing = max(0, sum(e.held for e in ended) - sum(e.llm_spans for e in ended))
    if missing and strict:
        raise SpansMissing(missing)
    judge_cost = 0
    for rid in judge_run_ids:
        if rid == own_run or judges[rid].agent != judge_agent:
            raise BadRequestError(f"run {rid} is not a judge run (agent {judge_agent})")
        judge_cost += judges[rid].observed.cost_nusd
    obs = _with_spans(cur, sql, own, own_run, by_run.get(own_run, ()))
    results = check(obs)
    done = {
        "status": "done", "passed": all(r.passed for r in results), "cost_nusd": obs.cost_nusd,
        "judge_cost_nusd": judge_cost,
        "duration_ms": (now - started_at).total_seconds() * 1000 if started_at else None,
        "agent_ms": agent_ms, "results": [r.to_dict() for r in results],
        "tools": [c.name for c in obs.tool_calls], "error": error, "ended_at": now,
    }  # fmt: skip
    _record(cur, sql, key, done, ev["target_cost_nusd"])
    out = {"eval_id": ev["id"], "task_id": task_id, "attempt": attempt, "run_id": own_run,
           "started_at": started_at, **done, "missing_spans": missing}  # fmt: skip
    if then is not None:
        out["next"] = start_in(conn, ev, then, now, noted=True)
    return out


def _running(
    cur: Any, sql: _Sql, key: dict[str, Any], run_id: str | None
) -> tuple[str, datetime | None]:
    """The attempt's run and start; an error unless it is running (in `run_id` if given)."""
    cur.execute(sql.text["attempt"], key)
    found = cur.fetchone()
    what = f"attempt {key['a']} of {key['t']!r}"
    if found is None:
        raise NotFoundError(f"no {what} in {key['e']}; start it first")
    own_run, status = found[0], found[1]
    if status == "done":
        raise ConflictError("the attempt is already finished", code="attempt_done")
    if run_id is not None and run_id != own_run:
        raise BadRequestError(f"run {run_id} is not {what} (its run is {own_run}); send the run "
                              "id its start answered")  # fmt: skip
    return own_run, sql.ts_out(found[2])


def _record(
    cur: Any, sql: _Sql, key: dict[str, Any], done: dict[str, Any], target: int | None
) -> None:
    """The attempt done, and counted on its eval: its cost, its judges', and whether it is a
    success at target cost (the KPI)."""
    cur.execute(sql.text["done"], {
        **key, "passed": done["passed"], "cost": done["cost_nusd"],
        "judge_cost": done["judge_cost_nusd"], "duration_ms": done["duration_ms"],
        "agent_ms": done["agent_ms"], "results": sql.json(done["results"]),
        "tools": sql.json(done["tools"]), "error": done["error"], "now": sql.ts(done["ended_at"]),
    })  # fmt: skip
    if cur.rowcount != 1:  # another finish of it committed meanwhile
        raise ConflictError("the attempt is already finished", code="attempt_done")
    at_target = done["passed"] and (target is None or done["cost_nusd"] <= target)
    cur.execute(sql.text["count"], {"e": key["e"], "passed": int(at_target),
                                    "cost": done["cost_nusd"],
                                    "judge_cost": done["judge_cost_nusd"]})  # fmt: skip


def _store_spans(
    conn: Connection, cur: Any, sql: _Sql, recs: Sequence[SpanRecord], run_ids: list[str],
    now: datetime,
) -> dict[str, list[SpanRecord]]:  # fmt: skip
    """Stores the taken spans; returns those of each run of the attempt (deduplicated by key)
    when they can be merged into their runs by the runs' end UPDATE, else {} after the generic
    write (ingest.write_spans_in) has merged them."""
    if not recs:
        return {}
    by_key = {(r.trace_id, r.span_id): r for r in recs}
    ordered = [by_key[k] for k in sorted(by_key)]
    wanted = set(run_ids)
    simple = all(r.run_id in wanted and not r.is_root and r.run_id != run_id_for_trace(r.trace_id)
                 for r in ordered)  # fmt: skip
    if simple:
        traces = sorted({r.trace_id for r in ordered})
        cur.execute(sql.probe(len(traces)), {f"t{i}": t for i, t in enumerate(traces)})
        simple = cur.fetchone() is None
    if not simple:
        write_spans_in(conn, ordered, now=now, source="gateway")
        return {}
    upsert_spans(conn, ordered)
    by_run: dict[str, list[SpanRecord]] = {}
    for r in ordered:
        by_run.setdefault(r.run_id, []).append(r)
    return by_run


def _first(recs: Sequence[SpanRecord], name: str) -> str | None:
    return next((getattr(r.attribution, name) for r in recs if getattr(r.attribution, name)), None)


def _end_run(
    cur: Any, sql: _Sql, run_id: str, recs: Sequence[SpanRecord], *, now: datetime, ok: bool,
    output: str | None, reason: str | None,
) -> _Ended:  # fmt: skip
    first = min(recs, key=lambda r: r.started_at) if recs else None
    cur.execute(sql.text["end_run"], {
        "id": run_id, "status": "succeeded" if ok else "failed", "now": sql.ts(now),
        "reason": reason, "output": output, "agent": _first(recs, "agent"),
        "version": _first(recs, "version"), "task_id": _first(recs, "task_id"),
        "user": _first(recs, "user"), "trace_id": first.trace_id if first else None,
        "first": sql.ts(first.started_at) if first else None,
    })  # fmt: skip
    row = cur.fetchone()
    if row is None:
        raise NotFoundError(f"no run {run_id}")
    started, ended = sql.ts_out(row[6]), sql.ts_out(row[7])
    obs = Observed(
        status=row[0], output=row[1], cost_nusd=row[2] or 0, llm_calls=row[3] or 0,
        input_tokens=row[4] or 0, output_tokens=row[5] or 0,
        duration_s=(ended - started).total_seconds() if ended and started else None,
        pending_approvals=int(row[12]), killed=row[0] == "killed", kill_reason=row[8],
        error=row[9],
    )  # fmt: skip
    return _Ended(obs, row[11], int(row[10]), int(row[13]), int(row[14]))


def _with_spans(
    cur: Any, sql: _Sql, ended: _Ended, run_id: str, recs: Sequence[SpanRecord]
) -> Observed:
    """The run's tool calls, their decisions, refusals and kills from its spans: those in hand
    when they are every span the run has stored, else read."""
    if ended.span_count == len(recs):
        rows: list[tuple[str, str, str | None, Any]] = [
            (r.kind, r.name, r.input, r.attributes)
            for r in sorted(recs, key=lambda r: r.started_at)
        ]
    else:
        cur.execute(sql.text["spans_of"], {"r": run_id})
        rows = [(k, n, i, sql.json_out(a)) for k, n, i, a in cur.fetchall()]
    return observed_from(ended.observed, rows)


def observed_from(base: Observed, rows: Sequence[tuple[str, str, str | None, Any]]) -> Observed:
    """`base` (the run's status and totals) with what its spans (kind, name, input, attributes,
    in start order) say: tool calls with the MCP gateway's decisions, denials, refusals, kills."""
    calls: list[ToolCall] = []
    denials = refusals = 0
    killed = base.killed
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
        args = _args(raw_input)
        calls.append(ToolCall(name, args, verdict))
        denials += verdict == "deny"
    return Observed(
        status=base.status, output=base.output, cost_nusd=base.cost_nusd,
        llm_calls=base.llm_calls, input_tokens=base.input_tokens,
        output_tokens=base.output_tokens, duration_s=base.duration_s, tool_calls=tuple(calls),
        policy_denials=denials, pending_approvals=base.pending_approvals,
        budget_refusals=refusals, killed=killed, kill_reason=base.kill_reason, error=base.error,
    )  # fmt: skip


def _args(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
