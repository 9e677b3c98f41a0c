"""Run and span queries: the filtered, keyset-paginated run list, one run, its span tree, and
the span list. Reads use `reading(engine)`; run creation goes through store/ingest.ensure_run."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, get_args

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Float,
    and_,
    cast,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)

from tether.core.errors import BadRequestError, ConflictError, NotFoundError
from tether.core.money import usd_to_nusd
from tether.core.records import RunAttribution, valid_run_id
from tether.store.engine import reading
from tether.store.feedback import feedback_summaries
from tether.store.ingest import ensure_run
from tether.store.tables import runs, spans

RunSort = Literal["-started_at", "started_at", "-cost", "cost", "-duration", "duration"]
RUN_SORTS: tuple[str, ...] = get_args(RunSort)
RUN_STATUSES = ("running", "succeeded", "failed", "killed", "awaiting_approval")
MAX_LIMIT = 500


@dataclass(frozen=True)
class RunFilters:
    """Every field is optional; given ones are ANDed. `q` searches id, task, agent and user."""

    agent: str | None = None
    version: str | None = None
    status: str | None = None
    user: str | None = None
    task_id: str | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None
    min_cost_usd: Decimal | None = None
    max_cost_usd: Decimal | None = None
    q: str | None = None


# ---------------------------------------------------------------- cursors


def encode_cursor(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str) -> dict[str, Any]:
    """The cursor's fields; a cursor from another list or sort order is a 400 naming `cursor`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise BadRequestError(
            "cursor: not a cursor this API returned", code="invalid_cursor"
        ) from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise BadRequestError(
            "cursor: it belongs to another list or sort order; start again without it",
            code="invalid_cursor",
        )
    return data


def _key_to_json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _key_from_json(value: Any, sort_name: str) -> Any:
    try:
        if sort_name == "started_at":
            return datetime.fromisoformat(value)
        if sort_name == "cost":
            return int(value)
        return float(value)
    except (TypeError, ValueError):
        raise BadRequestError(
            "cursor: damaged; start again without it", code="invalid_cursor"
        ) from None


# ---------------------------------------------------------------- the run list


def duration_ms(conn_or_engine: Connection | Engine) -> ColumnElement[float]:
    """A run's duration in ms, -1 while it runs (so running runs sort last, descending)."""
    r = runs.c
    if conn_or_engine.dialect.name == "sqlite":
        expr: ColumnElement[Any] = (func.julianday(r.ended_at) - func.julianday(r.started_at)) * (
            86_400_000.0
        )
    else:
        expr = func.extract("epoch", r.ended_at - r.started_at) * 1000
    return func.coalesce(cast(expr, Float), literal(-1.0, Float))


def _sort_key(engine: Engine, name: str) -> ColumnElement[Any]:
    if name == "cost":
        return runs.c.cost_nusd
    if name == "duration":
        return duration_ms(engine)
    return runs.c.started_at


def escape_like(text: str) -> str:
    """`text` matched literally by LIKE ... ESCAPE '\\'."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(f: RunFilters, dialect: str) -> list[ColumnElement[bool]]:
    r = runs.c
    conds: list[ColumnElement[bool]] = []
    for name in ("agent", "version", "status", "user", "task_id"):
        value = getattr(f, name)
        if value is not None:
            conds.append(r[name] == value)
    if f.status is not None and f.status not in RUN_STATUSES:
        raise BadRequestError(f"status: must be one of {', '.join(RUN_STATUSES)}")
    if f.started_after is not None:
        conds.append(r.started_at >= f.started_after)
    if f.started_before is not None:
        conds.append(r.started_at < f.started_before)
    if f.min_cost_usd is not None:
        conds.append(r.cost_nusd >= usd_to_nusd(f.min_cost_usd))
    if f.max_cost_usd is not None:
        conds.append(r.cost_nusd <= usd_to_nusd(f.max_cost_usd))
    if f.q:
        pattern = f"%{escape_like(f.q.strip())}%"
        cols = (r.id, r.task_id, r.agent, r.user)
        if dialect == "sqlite":
            # SQLite's LIKE ignores ASCII case already; ilike's lower() calls would double the scan.
            conds.append(or_(*(col.like(pattern, escape="\\") for col in cols)))
        else:
            conds.append(or_(*(col.ilike(pattern, escape="\\") for col in cols)))
    return conds


def list_runs(
    engine: Engine,
    filters: RunFilters | None = None,
    sort: str = "-started_at",
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of runs (dicts of columns plus `feedback`) and the cursor of the next page.

    Keyset pagination on (sort key, id): a page never repeats or skips a run, even while new
    runs arrive. Descending order ties break on ascending id, matching `ix_runs_started`.
    """
    if sort not in RUN_SORTS:
        raise BadRequestError(f"sort: must be one of {', '.join(RUN_SORTS)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequestError(f"limit: must be between 1 and {MAX_LIMIT}")
    desc = sort.startswith("-")
    name = sort.lstrip("-")
    key = _sort_key(engine, name)
    conds = _where(filters or RunFilters(), engine.dialect.name)
    if cursor:
        data = decode_cursor(cursor, f"runs:{sort}")
        k, rid = _key_from_json(data.get("k"), name), str(data.get("id"))
        if desc:
            conds.append(and_(key <= k, or_(key < k, runs.c.id > rid)))
        else:
            conds.append(and_(key >= k, or_(key > k, runs.c.id < rid)))
    order = (key.desc(), runs.c.id.asc()) if desc else (key.asc(), runs.c.id.desc())
    q = select(runs, key.label("_k")).where(*conds).order_by(*order).limit(limit + 1)
    with reading(engine) as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
        summaries = feedback_summaries(conn, [r["id"] for r in rows[:limit]])
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(
            {"kind": f"runs:{sort}", "k": _key_to_json(last["_k"]), "id": last["id"]}
        )
    page = rows[:limit]
    for row in page:
        row.pop("_k")
        row["feedback"] = summaries[row["id"]]
    return page, next_cursor


def get_run(engine: Engine, run_id: str) -> dict[str, Any]:
    """One run's columns plus its `feedback` summary, or NotFoundError."""
    with reading(engine) as conn:
        row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        if row is None:
            raise NotFoundError(f"no run {run_id}; `tether runs list` shows the ids")
        run = dict(row._mapping)
        run["feedback"] = feedback_summaries(conn, [run_id])[run_id]
    return run


def run_exists(conn: Connection, run_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(runs.c.id, runs.c.agent).where(runs.c.id == run_id)).first()
    return dict(row._mapping) if row else None


def create_run(
    engine: Engine,
    *,
    run_id: str,
    attribution: RunAttribution,
    input: str | None,
    now: datetime,
    source: str = "api",
) -> dict[str, Any]:
    """Creates a `running` run; an id that is taken is a ConflictError."""
    if not valid_run_id(run_id):
        raise BadRequestError("id: 1-64 characters of letters, digits and _ . : -")
    with engine.begin() as conn:
        if run_exists(conn, run_id):
            raise ConflictError(f"run {run_id} already exists", code="run_exists")
        ensure_run(conn, run_id, trace_id=None, attribution=attribution, started_at=now,
                   source=source, now=now)  # fmt: skip
        if input is not None:
            conn.execute(update(runs).where(runs.c.id == run_id).values(input=input))
    return get_run(engine, run_id)


def declare_run(
    engine: Engine, run_id: str, *, attribution: RunAttribution, input: str | None, now: datetime
) -> None:
    """A run the SDK declares on its first governed call (its spans come later, when the run
    ends): created if new, its input filled in if it has none. Never overwrites an input."""
    with engine.begin() as conn:
        ensure_run(conn, run_id, trace_id=None, attribution=attribution, started_at=now,
                   source="sdk", now=now)  # fmt: skip
        if input is not None:
            conn.execute(update(runs).where(runs.c.id == run_id, runs.c.input.is_(None))
                         .values(input=input))  # fmt: skip


# ---------------------------------------------------------------- spans


def run_spans(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    """A run's spans in start order, flat."""
    q = (
        select(spans)
        .where(spans.c.run_id == run_id)
        .order_by(spans.c.started_at, spans.c.trace_id, spans.c.span_id)
    )
    with reading(engine) as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def nest(flat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nests spans by `parent_id` under `children`; a span whose parent is absent is a root."""
    by_id = {(s["trace_id"], s["span_id"]): {**s, "children": []} for s in flat}
    roots: list[dict[str, Any]] = []
    for s in flat:
        node = by_id[(s["trace_id"], s["span_id"])]
        parent = by_id.get((s["trace_id"], s["parent_id"])) if s["parent_id"] else None
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent["children"].append(node)
    return roots


def span_tree(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    """A run's spans nested by parent, each level in start order."""
    return nest(run_spans(engine, run_id))


def list_spans(
    engine: Engine,
    *,
    run_id: str | None = None,
    kind: str | None = None,
    trace_id: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of spans: a run's in start order, or everyone's newest first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequestError(f"limit: must be between 1 and {MAX_LIMIT}")
    s = spans.c
    conds: list[ColumnElement[bool]] = []
    if run_id is not None:
        conds.append(s.run_id == run_id)
    if kind is not None:
        conds.append(s.kind == kind)
    if trace_id is not None:
        conds.append(s.trace_id == trace_id)
    asc = run_id is not None
    kind_tag = "spans:asc" if asc else "spans:desc"
    if cursor:
        data = decode_cursor(cursor, kind_tag)
        k = _key_from_json(data.get("k"), "started_at")
        tie = (str(data.get("t")), str(data.get("s")))
        pair = tuple_(s.trace_id, s.span_id)
        if asc:
            conds.append(and_(s.started_at >= k, or_(s.started_at > k, pair > tuple_(*tie))))
        else:
            conds.append(and_(s.started_at <= k, or_(s.started_at < k, pair < tuple_(*tie))))
    cols = (s.started_at, s.trace_id, s.span_id)
    order = cols if asc else tuple(c.desc() for c in cols)
    q = select(spans).where(*conds).order_by(*order).limit(limit + 1)
    with reading(engine) as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(
            {"kind": kind_tag, "k": last["started_at"].isoformat(), "t": last["trace_id"],
             "s": last["span_id"]}
        )  # fmt: skip
    return rows[:limit], next_cursor
