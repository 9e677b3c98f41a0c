"""What the OTLP exporter reads and records: spans of runs changed since its high-water mark
that have not gone out yet, the spans it has sent, and the mark itself. All in the store, so an
exporter that crashes (or a replica that takes over) goes on exactly where the last one was."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from tether.store.engine import reading
from tether.store.tables import export_marks, runs, span_exports, spans

# a run's updated_at is stamped (by its writer's clock) before its transaction commits: a run
# stamped just under the mark may commit after it moved, or come from a replica whose clock is
# behind, so every pass looks this far behind the mark again (replicas keep NTP time)
COMMIT_LAG = timedelta(minutes=5)


@dataclass(frozen=True)
class Pending:
    """A batch to send: span rows with their run's attribution, and where the read stopped."""

    spans: list[dict[str, Any]]
    runs: dict[str, dict[str, Any]]
    upto: datetime | None  # the mark to store once the batch is sent (None: keep reading)


def read_mark(engine: Engine, name: str) -> datetime | None:
    with reading(engine) as conn:
        return conn.execute(select(export_marks.c.mark).where(export_marks.c.name == name)).scalar()


def write_mark(engine: Engine, name: str, mark: datetime) -> None:
    with engine.begin() as conn:
        done = conn.execute(
            update(export_marks).where(export_marks.c.name == name).values(mark=mark)
        ).rowcount
        if not done:
            try:
                with conn.begin_nested():
                    conn.execute(insert(export_marks).values(name=name, mark=mark))
            except IntegrityError:  # written meanwhile: ours is as good
                conn.execute(
                    update(export_marks).where(export_marks.c.name == name).values(mark=mark)
                )


def pending(engine: Engine, mark: datetime | None, *, now: datetime, limit: int) -> Pending:
    """Up to `limit` unsent spans of runs updated since `mark` (less COMMIT_LAG).

    A batch of spans is one transaction, so whatever is visible is whole. When fewer than
    `limit` spans were pending, everything up to `now` is read: `upto` is `now`.
    """
    r, s, e = runs.c, spans.c, span_exports.c
    conds = []
    if mark is not None:
        conds.append(r.updated_at > mark - COMMIT_LAG)
    sent = select(e.span_id).where(and_(e.trace_id == s.trace_id, e.span_id == s.span_id))
    q = (
        select(spans, r.agent.label("run_agent"), r.version.label("run_version"),
               r.task_id.label("run_task_id"), r.user.label("run_user"))
        .select_from(spans.join(runs, runs.c.id == s.run_id))
        .where(*conds, ~sent.exists())
        .order_by(r.updated_at, s.run_id, s.started_at)
        .limit(limit)
    )  # fmt: skip
    with reading(engine) as conn:
        rows = [dict(row._mapping) for row in conn.execute(q)]
    attribution = {
        row["run_id"]: {"agent": row.pop("run_agent"), "version": row.pop("run_version"),
                        "task_id": row.pop("run_task_id"), "user": row.pop("run_user")}
        for row in rows
    }  # fmt: skip
    return Pending(rows, attribution, now if len(rows) < limit else None)


def mark_sent(engine: Engine, keys: list[tuple[str, str]], now: datetime) -> None:
    """Records spans as sent (idempotent: a span recorded twice stays recorded once)."""
    if not keys:
        return
    e = span_exports.c
    with engine.begin() as conn:
        known = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            known |= {
                (row.trace_id, row.span_id)
                for row in conn.execute(
                    select(e.trace_id, e.span_id).where(
                        e.span_id.in_([k[1] for k in chunk]),
                        e.trace_id.in_([k[0] for k in chunk]),
                    )
                )
            }
        fresh = [{"trace_id": t, "span_id": sp, "exported_at": now}
                 for t, sp in dict.fromkeys(keys) if (t, sp) not in known]  # fmt: skip
        if fresh:
            conn.execute(insert(span_exports), fresh)
