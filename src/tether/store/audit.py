"""The append-only audit log: every policy change, decision, approval and kill, hash-chained.

Appends are serialised (SQLite BEGIN IMMEDIATE, PostgreSQL an advisory transaction lock) so the
chain stays one line under any concurrency. `append_in` joins a caller's own transaction.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from sqlalchemy import Connection, Engine, func, insert, select, text

from tether.core import audit as chain
from tether.core.audit import GENESIS, AuditEntry, VerifyReport
from tether.core.ids import make_id
from tether.store.engine import reading
from tether.store.tables import audit_log

# Any constant will do; it only has to differ from the other advisory locks tether takes.
_LOCK_KEY = 7337_0006
_BATCH = 1000


def append_in(
    conn: Connection,
    actor: str,
    action: str,
    subject: str | None,
    data: Any,
    now: datetime,
) -> AuditEntry:
    """Appends inside the caller's open write transaction (committed with it)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    prev = conn.execute(select(audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)).scalar()
    entry = chain.seal(
        prev or GENESIS, 0, make_id("aud", os.urandom(12)), now, actor, action, subject, data
    )
    seq = conn.execute(
        insert(audit_log)
        .values(
            id=entry.id,
            at=entry.at,
            actor=actor,
            action=action,
            subject=subject,
            data=entry.data,
            prev_hash=entry.prev_hash,
            hash=entry.hash,
        )
        .returning(audit_log.c.seq)
    ).scalar_one()
    return AuditEntry(
        seq, entry.id, entry.at, actor, action, subject, entry.data, entry.prev_hash, entry.hash
    )


def append(
    engine: Engine, actor: str, action: str, subject: str | None, data: Any, now: datetime
) -> AuditEntry:
    """Appends one entry in a transaction of its own."""
    with engine.begin() as conn:
        return append_in(conn, actor, action, subject, data, now)


def _entry(row: Any) -> AuditEntry:
    r = row._mapping
    return AuditEntry(
        r["seq"],
        r["id"],
        r["at"],
        r["actor"],
        r["action"],
        r["subject"],
        r["data"],
        r["prev_hash"],
        r["hash"],
    )


def iter_entries(engine: Engine, *, after_seq: int = 0) -> Iterator[AuditEntry]:
    """Every entry in seq order, read in batches."""
    cursor = after_seq
    while True:
        with reading(engine) as conn:
            rows = conn.execute(
                select(audit_log)
                .where(audit_log.c.seq > cursor)
                .order_by(audit_log.c.seq)
                .limit(_BATCH)
            ).all()
        for row in rows:
            yield _entry(row)
        if len(rows) < _BATCH:
            return
        cursor = rows[-1].seq


def list_entries(
    engine: Engine,
    *,
    after_seq: int | None = None,
    limit: int = 100,
    action: str | None = None,
    subject: str | None = None,
    newest_first: bool = True,
) -> tuple[list[AuditEntry], int | None]:
    """A page of entries and the cursor of the next page (None at the end)."""
    q = select(audit_log)
    if action:
        q = q.where(audit_log.c.action == action)
    if subject:
        q = q.where(audit_log.c.subject == subject)
    if after_seq is not None:
        q = q.where(audit_log.c.seq < after_seq if newest_first else audit_log.c.seq > after_seq)
    order = audit_log.c.seq.desc() if newest_first else audit_log.c.seq
    with reading(engine) as conn:
        rows = conn.execute(q.order_by(order).limit(limit + 1)).all()
    entries = [_entry(r) for r in rows[:limit]]
    return entries, (entries[-1].seq if len(rows) > limit else None)


def count(engine: Engine) -> int:
    with reading(engine) as conn:
        return int(conn.execute(select(func.count()).select_from(audit_log)).scalar_one())


def verify(engine: Engine) -> VerifyReport:
    """Re-computes every link of the chain; the report names the first tampered entry."""
    return chain.verify(iter_entries(engine))


def get_entry(engine: Engine, seq: int) -> AuditEntry | None:
    with reading(engine) as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.seq == seq)).first()
    return _entry(row) if row else None


def jsonl(entry: AuditEntry) -> str:
    """One entry as a line of JSON (keys sorted), newline included."""
    return json.dumps(entry.to_dict(), sort_keys=True, ensure_ascii=False) + "\n"


def export(engine: Engine, fh: IO[str]) -> int:
    """Writes every entry as one JSON line, oldest first; returns how many."""
    n = 0
    for entry in iter_entries(engine):
        fh.write(jsonl(entry))
        n += 1
    return n
