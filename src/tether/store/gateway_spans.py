"""The gateway's LLM spans written on PostgreSQL in one pipelined transaction awaited on the
event loop: its spans inserted from arrays by one prepared statement, and each run's totals
moved by what the batch adds (one UPDATE per run), instead of ingest.write_spans_in's
reconcile, upsert, run merge and totals recomputed from every stored span (a fifth of the
server's CPU on the budgeted path, issue 9).

What makes that equivalent to write_spans_in, checked in the same transaction: no span of the
batch is stored yet (else an upsert must replace it and recompute its run), every run of the
batch exists (the gateway created it) unless the batch brings its root span (a run of its own:
it must not exist yet, and is created whole), and no stored span of the batch's traces belongs
to another run (else spans would move between runs).
When any of these fails the transaction is rolled back and the caller writes the batch through
write_spans_in, which handles every case. Adding a batch's sums to the run rows stays right with
concurrent writers of the same run: every writer updates the run row (a row lock) after its
spans, and write_spans_in recomputes its totals only once it holds that row's lock, so either it
sees this batch's committed spans or this batch's increment lands on its result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from tether.core.records import SpanRecord
from tether.store.pg_async import AsyncPG, NotCommitted

_COLS = (
    "trace_id", "span_id", "parent_id", "run_id", "kind", "name", "started_at", "ended_at",
    "latency_ms", "input", "output", "model", "model_served", "input_tokens", "output_tokens",
    "cached_tokens", "cost_nusd", "cost_unknown", "ttft_ms", "status", "error", "attributes",
)  # fmt: skip
_TYPES = (
    "text", "text", "text", "text", "text", "text", "timestamptz", "timestamptz", "float8",
    "text", "text", "text", "text", "int8", "int8", "int8", "int8", "bool", "float8", "text",
    "text", "text",
)  # fmt: skip
# one row per array element; attributes travel as JSON text. The arrays are bound in binary
# (%b): psycopg dumps them five times faster than as text
_INSERT = (
    f"INSERT INTO spans ({', '.join(_COLS)}) "
    f"SELECT {', '.join(c if c != 'attributes' else 'c.attributes::json' for c in _COLS)} "
    f"FROM unnest({', '.join(f'%({c})b::{t}[]' for c, t in zip(_COLS, _TYPES, strict=True))}) "
    f"AS c({', '.join(_COLS)}) ON CONFLICT (trace_id, span_id) DO NOTHING"
)
# a stored span that write_spans_in's reconcile would move or adopt: a named run's trace has
# spans of the trace's own default run, or a default run's trace has spans of another run
_FOREIGN = (
    "SELECT 1 FROM spans s JOIN unnest(%(traces)b::text[], %(runs)b::text[]) AS b(trace_id, "
    "run_id) ON s.trace_id = b.trace_id WHERE CASE WHEN b.run_id = 'run_' || b.trace_id "
    "THEN s.run_id <> b.run_id ELSE s.run_id = 'run_' || b.trace_id END LIMIT 1"
)
# what write_spans_in's recompute would change on a run that gains these spans (no root)
_RUN = (
    "UPDATE runs SET input_tokens = input_tokens + %(it)s, output_tokens = output_tokens + "
    "%(ot)s, cached_tokens = cached_tokens + %(ct)s, cost_nusd = cost_nusd + %(cost)s, "
    "cost_unknown = cost_unknown OR %(unknown)s, llm_calls = llm_calls + %(llm)s, "
    "tool_calls = tool_calls + %(tool)s, span_count = span_count + %(n)s, "
    "agent = COALESCE(agent, %(agent)s), version = COALESCE(version, %(version)s), "
    'task_id = COALESCE(task_id, %(task_id)s), "user" = COALESCE("user", %(user)s), '
    "started_at = LEAST(started_at, %(started_at)s), "
    "trace_id = COALESCE(trace_id, %(trace_id)s), updated_at = %(now)s WHERE id = %(id)s"
)
# a run of its own (the gateway's root span names it): created whole, as write_spans_in creates
# a run that a batch brings with its root; ON CONFLICT: it exists already, write_spans_in decides
_NEW_RUN = (
    'INSERT INTO runs (id, trace_id, agent, version, task_id, "user", status, started_at, '
    "ended_at, input, output, input_tokens, output_tokens, cached_tokens, cost_nusd, "
    "cost_unknown, llm_calls, tool_calls, span_count, error, source, updated_at) VALUES "
    "(%(id)s, %(trace_id)s, %(agent)s, %(version)s, %(task_id)s, %(user)s, %(status)s, "
    "%(started_at)s, %(ended_at)s, %(input)s, %(output)s, %(it)s, %(ot)s, %(ct)s, %(cost)s, "
    "%(unknown)s, %(llm)s, %(tool)s, %(n)s, %(error)s, 'gateway', %(now)s) "
    "ON CONFLICT (id) DO NOTHING"
)
_AGENTS = (
    "INSERT INTO agents (name, created_at, last_seen_at) VALUES (%(a)s, %(now)s, %(now)s) "
    "ON CONFLICT (name) DO UPDATE SET last_seen_at = excluded.last_seen_at"
)
_VERSIONS = (
    "INSERT INTO agent_versions (agent, version, created_at, last_seen_at) "
    "VALUES (%(a)s, %(v)s, %(now)s, %(now)s) "
    "ON CONFLICT (agent, version) DO UPDATE SET last_seen_at = excluded.last_seen_at"
)


@dataclass
class _Run:
    it: int = 0
    ot: int = 0
    ct: int = 0
    cost: int = 0
    unknown: bool = False
    llm: int = 0
    tool: int = 0
    n: int = 0
    first: SpanRecord | None = None
    agent: str | None = None
    version: str | None = None
    task_id: str | None = None
    user: str | None = None
    roots: list[SpanRecord] = field(default_factory=list)

    def add(self, r: SpanRecord) -> None:
        self.it += r.input_tokens or 0
        self.ot += r.output_tokens or 0
        self.ct += r.cached_tokens or 0
        self.cost += r.cost_nusd or 0
        self.unknown = self.unknown or r.cost_unknown
        self.llm += r.kind == "llm"
        self.tool += r.kind == "tool"
        self.n += 1
        if r.is_root:
            self.roots.append(r)
        if self.first is None or r.started_at < self.first.started_at:
            self.first = r
        # the first span that says each (write_spans_in's _best_attribution without a root)
        a = r.attribution
        self.agent = self.agent or a.agent or None
        self.version = self.version or a.version or None
        self.task_id = self.task_id or a.task_id or None
        self.user = self.user or a.user or None

    def params(self, run_id: str, now: datetime) -> dict[str, Any]:
        assert self.first is not None
        return {"id": run_id, "it": self.it, "ot": self.ot, "ct": self.ct, "cost": self.cost,
                "unknown": self.unknown, "llm": self.llm, "tool": self.tool, "n": self.n,
                "agent": self.agent, "version": self.version, "task_id": self.task_id,
                "user": self.user, "started_at": self.first.started_at,
                "trace_id": self.first.trace_id, "now": now}  # fmt: skip

    def new_run(self, run_id: str, now: datetime) -> dict[str, Any]:
        """The row write_spans_in's _merge_runs creates for a run that comes with its root."""
        root = self.roots[0]
        values = self.params(run_id, now)
        for name in ("agent", "version", "task_id", "user"):  # the root speaks first
            values[name] = getattr(root.attribution, name) or values[name]
        status = "running"
        if root.ended_at is not None:
            status = "failed" if root.status == "error" else "succeeded"
        values.update(status=status, ended_at=root.ended_at, input=root.input,
                      output=root.output, error=root.error or None)  # fmt: skip
        return values


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime given; tether stores UTC-aware timestamps")
    return value


def _columns(recs: Sequence[SpanRecord]) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {c: [] for c in _COLS}
    for r in recs:
        values = (
            r.trace_id, r.span_id, r.parent_id, r.run_id, r.kind, r.name[:500],
            _aware(r.started_at), _aware(r.ended_at), r.latency_ms, r.input, r.output, r.model,
            r.model_served, r.input_tokens, r.output_tokens, r.cached_tokens, r.cost_nusd,
            bool(r.cost_unknown), r.ttft_ms, r.status, r.error,
            orjson.dumps(r.attributes).decode() if r.attributes else None,
        )  # fmt: skip
        for c, v in zip(_COLS, values, strict=True):
            cols[c].append(v)
    return cols


async def write_gateway_spans(pg: AsyncPG, records: Sequence[SpanRecord], now: datetime) -> bool:
    """Stores `records` in one transaction; False, with nothing stored, when the batch needs
    write_spans_in (a span stored already; a run missing, or the run of a root span existing;
    spans of its traces in other runs). Raises on a database error, storing nothing."""
    if not records:
        return True
    by_key = {(r.trace_id, r.span_id): r for r in records}  # the last of a duplicate wins
    recs = [by_key[k] for k in sorted(by_key)]  # key order: concurrent batches lock alike
    grouped: dict[str, _Run] = {}
    for r in recs:
        grouped.setdefault(r.run_id, _Run()).add(r)
    if any(len(g.roots) > 1 for g in grouped.values()):
        return False  # which root speaks for the run: write_spans_in's choice
    new_runs = [grouped[rid].new_run(rid, now) for rid in sorted(grouped) if grouped[rid].roots]
    run_params = [grouped[rid].params(rid, now) for rid in sorted(grouped)
                  if not grouped[rid].roots]  # fmt: skip
    traces = sorted({(r.trace_id, r.run_id) for r in recs})
    probe = {"traces": [t for t, _ in traces], "runs": [rid for _, rid in traces]}
    cols = _columns(recs)
    seen = sorted({(r.attribution.agent, r.attribution.version or "") for r in recs
                   if r.attribution.agent})  # fmt: skip
    agents = [{"a": a, "now": now} for a in sorted({a for a, _ in seen})]
    versions = [{"a": a, "v": v, "now": now} for a, v in seen if v]

    async def work(conn: Any) -> bool:
        import psycopg  # here, not at the top: a SQLite server never loads it

        try:
            async with conn.pipeline():
                foreign = conn.cursor()
                await foreign.execute(_FOREIGN, probe, prepare=True)
                spans = conn.cursor()
                await spans.execute(_INSERT, cols, prepare=True)
                if agents:
                    await conn.cursor().executemany(_AGENTS, agents)
                if versions:
                    await conn.cursor().executemany(_VERSIONS, versions)
                created = conn.cursor()
                if new_runs:
                    await created.executemany(_NEW_RUN, new_runs)
                totals = conn.cursor()
                if run_params:
                    await totals.executemany(_RUN, run_params)
            clean = (
                await foreign.fetchone() is None
                and spans.rowcount == len(recs)
                and (not new_runs or created.rowcount == len(new_runs))
                and (not run_params or totals.rowcount == len(run_params))
            )
            if not clean:
                await conn.rollback()
                return False
        except psycopg.OperationalError as exc:
            raise NotCommitted from exc  # before the COMMIT: nothing of it can have committed
        except psycopg.Error:
            await conn.rollback()  # e.g. a refused value: the connection stays usable
            raise
        # a connection lost during the COMMIT is raised as it is: the writer sends the batch
        # again, and finding its spans stored, write_spans_in upserts them and recomputes
        await conn.commit()
        return True

    return await pg.transaction(work)
