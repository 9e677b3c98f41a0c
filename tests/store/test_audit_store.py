"""The audit log in the store: appends chain under concurrency; tampering by SQL is found."""

from __future__ import annotations

import io
import json
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, update

from tether.core.audit import GENESIS
from tether.store import audit
from tether.store.tables import audit_log

NOW = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)


def fill(db: Engine, n: int) -> None:
    for i in range(n):
        audit.append(
            db,
            "key:k",
            "policy.decision",
            f"run_{i}",
            {"outcome": "allow", "i": i, "cost": 0.1, "tags": ["a", "b"]},
            NOW + timedelta(seconds=i),
        )


def test_append_chains_and_verifies(db: Engine) -> None:
    fill(db, 5)
    report = audit.verify(db)
    assert report.ok and report.count == 5
    entries, cursor = audit.list_entries(db, limit=3)
    assert [e.subject for e in entries] == ["run_4", "run_3", "run_2"]
    rest, end = audit.list_entries(db, after_seq=cursor, limit=3)
    assert [e.subject for e in rest] == ["run_1", "run_0"] and end is None
    oldest, _ = audit.list_entries(db, newest_first=False, limit=1)
    assert oldest[0].prev_hash == GENESIS and oldest[0].at == NOW


def test_append_in_joins_the_callers_transaction(db: Engine) -> None:
    try:
        with db.begin() as conn:
            audit.append_in(conn, "key:k", "run.killed", "run_1", {}, NOW)
            raise RuntimeError("caller fails after appending")
    except RuntimeError:
        pass
    assert audit.count(db) == 0
    with db.begin() as conn:
        audit.append_in(conn, "key:k", "run.killed", "run_1", {"reason": "budget"}, NOW)
    assert audit.count(db) == 1 and audit.verify(db).ok


def test_concurrent_appends_keep_one_chain(db: Engine) -> None:
    def worker(w: int) -> None:
        for i in range(10):
            audit.append(db, f"w{w}", "policy.decision", None, {"i": i}, NOW)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = audit.verify(db)
    assert report.ok and report.count == 40


def test_tampering_by_sql_is_found(db: Engine) -> None:
    fill(db, 6)
    entries, _ = audit.list_entries(db, newest_first=False)
    target = entries[2]
    with db.begin() as conn:
        conn.execute(
            update(audit_log)
            .where(audit_log.c.seq == target.seq)
            .values(data={"outcome": "deny", "i": 2, "cost": 0.1, "tags": ["a", "b"]})
        )
    report = audit.verify(db)
    assert not report.ok and report.first_bad_seq == target.seq
    assert "changed" in (report.problem or "")


def test_rehashed_edit_breaks_the_next_link(db: Engine) -> None:
    # A forger who also recomputes the edited row's hash is caught at the next row.
    from tether.core.audit import entry_hash

    fill(db, 4)
    entries, _ = audit.list_entries(db, newest_first=False)
    e = entries[1]
    forged = entry_hash(e.prev_hash, e.id, e.at, "someone-else", e.action, e.subject, e.data)
    with db.begin() as conn:
        conn.execute(
            update(audit_log)
            .where(audit_log.c.seq == e.seq)
            .values(actor="someone-else", hash=forged)
        )
    assert audit.verify(db).first_bad_seq == entries[2].seq


def test_deleted_row_is_found(db: Engine) -> None:
    fill(db, 4)
    entries, _ = audit.list_entries(db, newest_first=False)
    with db.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == entries[1].seq))
    assert audit.verify(db).first_bad_seq == entries[2].seq


def test_export_jsonl(db: Engine) -> None:
    fill(db, 3)
    buf = io.StringIO()
    assert audit.export(db, buf) == 3
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [x["subject"] for x in lines] == ["run_0", "run_1", "run_2"]
    assert lines[1]["prev_hash"] == lines[0]["hash"]
    assert lines[0]["at"] == "2026-11-25T12:00:00.123456Z"
