"""Held calls: create (run awaits approval), decide once, expire with the default, wait."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from tether.core.errors import BadRequestError, ConflictError, NotFoundError
from tether.store import approvals, audit
from tether.store.tables import runs

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def hold(db: Engine, **kw: object) -> approvals.Approval:
    args: dict[str, object] = dict(
        tool="demo.send_email",
        arguments={"to": "a@b.c"},
        run_id="run_1",
        agent="triage",
        rule="tools[0]",
        reason="needs a person",
        timeout_s=60,
        now=NOW,
    )
    args.update(kw)
    return approvals.create(db, **args)  # type: ignore[arg-type]


def run_status(db: Engine, run_id: str = "run_1") -> str:
    with db.connect() as conn:
        return str(conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar())


def test_hold_then_approve(db: Engine) -> None:
    a = hold(db)
    assert a.pending and a.id.startswith("apr_") and a.expires_at == NOW + timedelta(seconds=60)
    assert run_status(db) == "awaiting_approval"
    assert [x.id for x in approvals.list_approvals(db, status="pending")] == [a.id]
    done = approvals.decide(db, a.id, approve=True, actor="alice", reason="ok", now=NOW)
    assert (done.status, done.decided_by, done.decision_reason) == ("approved", "alice", "ok")
    assert run_status(db) == "running"
    with pytest.raises(ConflictError, match="already approved"):
        approvals.decide(db, a.id, approve=False, actor="bob", reason=None, now=NOW)
    actions = [e.action for e in audit.list_entries(db, newest_first=False)[0]]
    assert actions == ["approval.requested", "approval.decided"]


def test_run_stays_held_while_another_hold_is_pending(db: Engine) -> None:
    a, b = hold(db), hold(db)
    approvals.decide(db, a.id, approve=False, actor="x", reason="no", now=NOW)
    assert run_status(db) == "awaiting_approval"
    approvals.decide(db, b.id, approve=True, actor="x", reason=None, now=NOW)
    assert run_status(db) == "running"


def test_expiry_applies_the_default(db: Engine) -> None:
    a = hold(db, timeout_s=5)
    later = NOW + timedelta(seconds=6)
    with pytest.raises(ConflictError, match="expired"):
        approvals.decide(db, a.id, approve=True, actor="late", reason=None, now=later)
    [expired] = approvals.expire_due(db, now=later)
    assert (expired.status, expired.decided_by) == ("expired", "timeout")
    b = hold(db, timeout_s=5, default_decision="allow")
    assert approvals.expire(db, b.id, now=later).status == "approved"
    with pytest.raises(BadRequestError):
        hold(db, default_decision="maybe")
    with pytest.raises(NotFoundError):
        approvals.get(db, "apr_nope")
    with pytest.raises(BadRequestError):
        approvals.list_approvals(db, status="weird")


async def test_wait_wakes_on_a_decision_from_another_thread(db: Engine) -> None:
    a = hold(db, now=datetime.now(UTC))
    decided_at: list[float] = []

    def decide_soon() -> None:
        time.sleep(0.3)
        decided_at.append(time.monotonic())
        approvals.decide(db, a.id, approve=True, actor="t", reason=None, now=datetime.now(UTC))

    threading.Thread(target=decide_soon).start()
    result = await approvals.wait(db, a.id, timeout_s=5)
    woke = time.monotonic()
    assert result.status == "approved"
    assert woke - decided_at[0] < 0.5  # polls every 50 ms; loose bound for a busy CI box


async def test_wait_times_out_pending_and_expires(db: Engine) -> None:
    a = hold(db, now=datetime.now(UTC), timeout_s=60)
    assert (await approvals.wait(db, a.id, timeout_s=0.1)).status == "pending"
    b = hold(db, now=datetime.now(UTC), timeout_s=0.2)
    assert (await approvals.wait(db, b.id, timeout_s=5)).status == "expired"
