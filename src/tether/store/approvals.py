"""Held tool calls waiting for a person: create, decide, expire (applying the default), wait.

Statuses: pending -> approved | denied | expired. A hold that times out with the default
`deny` becomes `expired`; with the default `allow` it becomes `approved` (decided_by
`timeout`). Waiters poll the store every 50 ms, so a decision made by another process (the
CLI on the same database, another server replica) wakes them within ~50 ms.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from sqlalchemy import Connection, Engine, and_, insert, or_, select, update

from tether.core.errors import BadRequestError, ConflictError, NotFoundError
from tether.core.ids import make_id
from tether.core.records import RunAttribution
from tether.store import audit, grants
from tether.store.engine import reading
from tether.store.ingest import ensure_run, set_run_status
from tether.store.runs import decode_cursor, encode_cursor
from tether.store.tables import approvals, runs

STATUSES = ("pending", "approved", "denied", "expired")
POLL_S = 0.05


@dataclass(frozen=True)
class Approval:
    id: str
    run_id: str | None
    agent: str | None
    tool: str
    arguments: Any
    rule: str | None
    reason: str | None
    status: str
    default_decision: str
    decided_by: str | None
    decision_reason: str | None
    created_at: datetime
    decided_at: datetime | None
    expires_at: datetime
    finding: dict[str, Any] | None = None
    args_hash: str | None = None
    scope: str | None = None

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "agent": self.agent,
            "tool": self.tool,
            "arguments": self.arguments,
            "rule": self.rule,
            "reason": self.reason,
            "status": self.status,
            "default_decision": self.default_decision,
            "decided_by": self.decided_by,
            "decision_reason": self.decision_reason,
            "created_at": self.created_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "expires_at": self.expires_at.isoformat(),
            "finding": self.finding,
            "scope": self.scope,
        }


def _row(row: Any) -> Approval:
    r = row._mapping
    return Approval(**{name: r[name] for name in Approval.__dataclass_fields__})


def create(
    engine: Engine,
    *,
    tool: str,
    arguments: Any,
    run_id: str | None,
    agent: str | None,
    rule: str | None,
    reason: str | None,
    timeout_s: float,
    now: datetime,
    default_decision: str = "deny",
    finding: dict[str, Any] | None = None,
    args_hash: str | None = None,
) -> Approval:
    """Holds a call: stores it pending and moves its run to `awaiting_approval`. `finding` is
    the argument value that made it a hold (value provenance), `args_hash` the call's identity."""
    with engine.begin() as conn:
        return create_in(conn, tool=tool, arguments=arguments, run_id=run_id, agent=agent,
                         rule=rule, reason=reason, timeout_s=timeout_s, now=now,
                         default_decision=default_decision, finding=finding,
                         args_hash=args_hash)  # fmt: skip


def create_in(
    conn: Connection,
    *,
    tool: str,
    arguments: Any,
    run_id: str | None,
    agent: str | None,
    rule: str | None,
    reason: str | None,
    timeout_s: float,
    now: datetime,
    default_decision: str = "deny",
    finding: dict[str, Any] | None = None,
    args_hash: str | None = None,
) -> Approval:
    """`create` inside the caller's transaction (a hold recorded with rows of its own)."""
    if default_decision not in ("deny", "allow"):
        raise BadRequestError("default_decision must be deny or allow")
    row = {
        "id": make_id("apr", os.urandom(12)), "run_id": run_id, "agent": agent, "tool": tool,
        "arguments": arguments, "rule": rule, "reason": reason, "status": "pending",
        "default_decision": default_decision, "created_at": now,
        "expires_at": now + timedelta(seconds=max(0.0, timeout_s)), "finding": finding,
        "args_hash": args_hash,
    }  # fmt: skip
    conn.execute(insert(approvals).values(**row))
    if run_id:
        ensure_run(conn, run_id, trace_id=None, attribution=RunAttribution(agent=agent),
                   started_at=now, source="gateway", now=now)  # fmt: skip
        set_run_status(conn, run_id, "awaiting_approval", now=now)
    audit.append_in(conn, actor=f"agent:{agent}" if agent else "tether",
                 action="approval.requested", subject=row["id"],
                 data={"tool": tool, "run_id": run_id, "rule": rule, "reason": reason},
                 now=now)  # fmt: skip
    return _row(conn.execute(select(approvals).where(approvals.c.id == row["id"])).one())


def get(engine: Engine, approval_id: str) -> Approval:
    with reading(engine) as conn:
        row = conn.execute(select(approvals).where(approvals.c.id == approval_id)).first()
    if row is None:
        raise NotFoundError(f"no approval {approval_id!r}; see `tether approvals list`")
    return _row(row)


def list_approvals(
    engine: Engine, *, status: str | None = None, run_id: str | None = None, limit: int = 100
) -> list[Approval]:
    """Newest first (the console's list)."""
    return page_approvals(engine, status=status, run_id=run_id, limit=limit)[0]


def page_approvals(
    engine: Engine,
    *,
    status: str | None = None,
    run_id: str | None = None,
    agent: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[Approval], str | None]:
    """A page, newest first, and the cursor of the next one (None at the end)."""
    if status is not None and status not in STATUSES:
        raise BadRequestError(f"unknown status {status!r}; use {', '.join(STATUSES)}")
    c = approvals.c
    q = select(approvals).order_by(c.created_at.desc(), c.id.desc()).limit(limit + 1)
    if status:
        q = q.where(c.status == status)
    if run_id:
        q = q.where(c.run_id == run_id)
    if agent is not None:
        q = q.where(c.agent == agent)
    if cursor:
        after = decode_cursor(cursor, "approvals")
        try:
            at = datetime.fromisoformat(after["at"])
        except (KeyError, TypeError, ValueError):
            raise BadRequestError("cursor: not a cursor this API returned") from None
        q = q.where(or_(c.created_at < at, and_(c.created_at == at, c.id < after.get("id", ""))))
    with reading(engine) as conn:
        rows = [_row(r) for r in conn.execute(q)]
    items = rows[:limit]
    more = len(rows) > limit
    last = items[-1] if items else None
    next_cursor = (
        encode_cursor({"kind": "approvals", "at": last.created_at.isoformat(), "id": last.id})
        if more and last
        else None
    )
    return items, next_cursor


def decide(
    engine: Engine,
    approval_id: str,
    *,
    approve: bool,
    actor: str,
    reason: str | None,
    now: datetime,
    scope: str = "call",
) -> Approval:
    """A person's decision. Only a pending, unexpired hold can be decided (else 409).
    An approval's `scope` (call | run | counterparty, store/grants.py) may cover later holds."""
    status = "approved" if approve else "denied"
    return _settle(engine, approval_id, status=status, actor=actor, reason=reason, now=now,
                   action="approval.decided", scope=scope if approve else "call")  # fmt: skip


def find_same(engine: Engine, *, run_id: str | None, tool: str, args_hash: str) -> Approval | None:
    """The newest hold of this run for the same tool and arguments (pending or decided)."""
    if not run_id:
        return None
    c = approvals.c
    q = (
        select(approvals)
        .where(c.run_id == run_id, c.tool == tool, c.args_hash == args_hash)
        .order_by(c.created_at.desc())
        .limit(1)
    )
    with reading(engine) as conn:
        row = conn.execute(q).first()
    return _row(row) if row else None


def _settle(
    engine: Engine, approval_id: str, *, status: str, actor: str, reason: str | None,
    now: datetime, action: str, scope: str = "call",
) -> Approval:  # fmt: skip
    with engine.begin() as conn:
        row = conn.execute(select(approvals).where(approvals.c.id == approval_id)).first()
        if row is None:
            raise NotFoundError(f"no approval {approval_id!r}; see `tether approvals list`")
        current = _row(row)
        if action == "approval.decided" and current.pending and current.expires_at <= now:
            raise ConflictError(f"approval {approval_id} expired at {current.expires_at}; "
                                f"the default ({current.default_decision}) applies")  # fmt: skip
        done = conn.execute(
            update(approvals)
            .where(approvals.c.id == approval_id, approvals.c.status == "pending")
            .values(
                status=status, decided_by=actor, decision_reason=reason, decided_at=now, scope=scope
            )
        ).rowcount
        if not done:
            raise ConflictError(f"approval {approval_id} is already {current.status}")
        grants.create_in(conn, scope=scope, agent=current.agent, tool=current.tool,
                         run_id=current.run_id, arguments_hash=current.args_hash,
                         finding=current.finding, approval_id=approval_id, actor=actor,
                         now=now)  # fmt: skip
        if current.run_id:
            _release_run(conn, current.run_id, now=now)
        audit.append_in(conn, actor=actor, action=action, subject=approval_id,
                     data={"status": status, "reason": reason, "tool": current.tool, "scope": scope,
                           "run_id": current.run_id}, now=now)  # fmt: skip
        return _row(conn.execute(select(approvals).where(approvals.c.id == approval_id)).one())


def _release_run(conn: Any, run_id: str, *, now: datetime) -> None:
    """Back to `running` once no hold of the run is pending any more."""
    still = conn.execute(
        select(approvals.c.id).where(approvals.c.run_id == run_id, approvals.c.status == "pending")
    ).first()
    status = conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar()
    if still is None and status == "awaiting_approval":
        set_run_status(conn, run_id, "running", now=now)


def expire(engine: Engine, approval_id: str, *, now: datetime) -> Approval:
    """Applies the default to a hold whose time is up; returns it as it stands after."""
    current = get(engine, approval_id)
    if not current.pending or current.expires_at > now:
        return current
    status = "approved" if current.default_decision == "allow" else "expired"
    reason = f"no decision within the timeout; default {current.default_decision} applied"
    try:
        return _settle(engine, approval_id, status=status, actor="timeout", reason=reason,
                       now=now, action="approval.expired")  # fmt: skip
    except ConflictError:
        return get(engine, approval_id)  # someone decided in the same instant


def expire_due(engine: Engine, *, now: datetime) -> list[Approval]:
    """Expires every pending hold past its time (a sweep; waiters also expire their own)."""
    with reading(engine) as conn:
        due = (
            conn.execute(
                select(approvals.c.id).where(
                    approvals.c.status == "pending", approvals.c.expires_at <= now
                )
            )
            .scalars()
            .all()
        )
    return [expire(engine, i, now=now) for i in due]


class Wakers:
    """In-process events for waiters, set when this process decides a hold (no polling wait)."""

    def __init__(self) -> None:
        self.events: dict[str, set[anyio.Event]] = {}

    @contextmanager
    def watch(self, approval_id: str) -> Iterator[anyio.Event]:
        event = anyio.Event()
        self.events.setdefault(approval_id, set()).add(event)
        try:
            yield event
        finally:
            found = self.events.get(approval_id, set())
            found.discard(event)
            if not found:
                self.events.pop(approval_id, None)

    def wake(self, approval_id: str) -> None:
        for event in self.events.get(approval_id, ()):
            event.set()


def _expire_at(engine: Engine, approval_id: str, now: datetime) -> Approval:
    return expire(engine, approval_id, now=now)


async def wait(
    engine: Engine, approval_id: str, *, timeout_s: float, wake: anyio.Event | None = None
) -> Approval:
    """Returns once the hold is decided or expired, or after `timeout_s` (still pending).

    The store is polled every 50 ms; `wake`, set by a decision made in this process, cuts
    the wait short.
    """
    deadline = anyio.current_time() + max(0.0, timeout_s)
    while True:
        current = await anyio.to_thread.run_sync(get, engine, approval_id)
        if not current.pending:
            return current
        now = datetime.now(UTC)
        if current.expires_at <= now:
            return await anyio.to_thread.run_sync(_expire_at, engine, approval_id, now)
        if anyio.current_time() >= deadline:
            return current
        pause = min(POLL_S, max(0.0, deadline - anyio.current_time()))
        if wake is None or wake.is_set():
            await anyio.sleep(pause)
        else:
            with anyio.move_on_after(pause):
                await wake.wait()
