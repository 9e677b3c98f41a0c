"""Scoped approvals: what a person approved beyond one call. `run` covers the same tool with the
same arguments for the rest of the run; `counterparty` covers the value that caused the hold
(a recipient, an IBAN) for that tool and agent from then on. Granting and revoking are audited.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, or_, select, update

from tether.core.errors import BadRequestError, NotFoundError
from tether.core.ids import make_id
from tether.core.provenance import Atom
from tether.store import audit
from tether.store.engine import reading
from tether.store.tables import approval_grants

SCOPES = ("call", "run", "counterparty")


@dataclass(frozen=True)
class Grant:
    id: str
    agent: str
    tool: str
    scope: str
    run_id: str | None
    args_hash: str | None
    value_digest: str | None
    value: str | None
    approval_id: str | None
    granted_by: str
    created_at: datetime
    revoked_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "agent": self.agent, "tool": self.tool, "scope": self.scope,
            "run_id": self.run_id, "value": self.value, "approval_id": self.approval_id,
            "granted_by": self.granted_by, "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }  # fmt: skip

    def describe(self) -> str:
        if self.scope == "run":
            return (
                f"{self.granted_by} approved {self.tool} with these arguments for run {self.run_id}"
            )
        return f"{self.granted_by} approved {self.value!r} as a counterparty of {self.tool}"


def _row(row: Any) -> Grant:
    r = row._mapping
    return Grant(**{name: r[name] for name in Grant.__dataclass_fields__})


def args_hash(arguments: Mapping[str, Any] | None) -> str:
    """sha256 of the canonical JSON of a call's arguments (the identity of "the same call")."""
    text = json.dumps(arguments or {}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def finding_digest(finding: Mapping[str, Any] | None) -> str | None:
    if not finding or not finding.get("kind") or finding.get("value") is None:
        return None
    return Atom(finding["kind"], str(finding["value"])).digest


def create_in(
    conn: Connection,
    *,
    scope: str,
    agent: str | None,
    tool: str,
    run_id: str | None,
    arguments_hash: str | None,
    finding: Mapping[str, Any] | None,
    approval_id: str,
    actor: str,
    now: datetime,
) -> Grant | None:
    """The grant an approval with `scope` makes (None for `call`), inside the caller's
    transaction; a scope the hold cannot support is a BadRequestError."""
    if scope not in SCOPES:
        raise BadRequestError(f"unknown scope {scope!r}; use call, run or counterparty")
    if scope == "call":
        return None
    if not agent:
        raise BadRequestError("this hold has no agent, so only scope `call` applies")
    digest = finding_digest(finding) if scope == "counterparty" else None
    if scope == "counterparty" and digest is None:
        raise BadRequestError("this hold was not caused by an argument value, so there is no "
                              "counterparty to approve; use scope `call` or `run`")  # fmt: skip
    if scope == "run" and not (run_id and arguments_hash):
        raise BadRequestError("this hold has no run; use scope `call`")
    grant_id = make_id("grt", os.urandom(12))
    row: dict[str, Any] = {
        "id": grant_id, "agent": agent, "tool": tool, "scope": scope,
        "run_id": run_id if scope == "run" else None,
        "args_hash": arguments_hash if scope == "run" else None, "value_digest": digest,
        "value": str(finding["value"]) if digest and finding else None,
        "approval_id": approval_id, "granted_by": actor, "created_at": now,
    }  # fmt: skip
    conn.execute(insert(approval_grants).values(**row))
    audit.append_in(conn, actor=actor, action="approval.granted", subject=grant_id,
                    data={k: row[k] for k in ("agent", "tool", "scope", "run_id", "value",
                                              "approval_id")}, now=now)  # fmt: skip
    return _row(conn.execute(select(approval_grants).where(approval_grants.c.id == grant_id)).one())


def covering(
    engine: Engine,
    *,
    agent: str | None,
    tool: str,
    run_id: str | None,
    arguments_hash: str,
    finding: Mapping[str, Any] | None,
) -> Grant | None:
    """A live grant that covers this hold, if any."""
    if not agent:
        return None
    c = approval_grants.c
    options = []
    if run_id:
        options.append(and_(c.scope == "run", c.run_id == run_id, c.args_hash == arguments_hash))
    digest = finding_digest(finding)
    if digest:
        options.append(and_(c.scope == "counterparty", c.value_digest == digest))
    if not options:
        return None
    q = (
        select(approval_grants)
        .where(c.agent == agent, c.tool == tool, c.revoked_at.is_(None), or_(*options))
        .order_by(c.created_at)
        .limit(1)
    )
    with reading(engine) as conn:
        row = conn.execute(q).first()
    return _row(row) if row else None


def list_grants(engine: Engine, *, agent: str | None = None, live: bool = True) -> list[Grant]:
    c = approval_grants.c
    q = select(approval_grants).order_by(c.created_at.desc()).limit(1000)
    if agent:
        q = q.where(c.agent == agent)
    if live:
        q = q.where(c.revoked_at.is_(None))
    with reading(engine) as conn:
        return [_row(r) for r in conn.execute(q)]


def revoke(engine: Engine, grant_id: str, *, actor: str, now: datetime) -> Grant:
    with engine.begin() as conn:
        done = conn.execute(
            update(approval_grants)
            .where(approval_grants.c.id == grant_id, approval_grants.c.revoked_at.is_(None))
            .values(revoked_at=now)
        ).rowcount
        row = conn.execute(select(approval_grants).where(approval_grants.c.id == grant_id)).first()
        if row is None:
            raise NotFoundError(f"no grant {grant_id!r}; see GET /api/v1/approvals/grants")
        if done:
            audit.append_in(conn, actor=actor, action="approval.revoked", subject=grant_id,
                            data={"tool": row.tool, "scope": row.scope}, now=now)  # fmt: skip
        return _row(row)
