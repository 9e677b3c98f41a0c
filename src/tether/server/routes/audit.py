"""`/api/v1/audit`: the hash-chained audit log: pages (newest first), verification, JSONL export."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from tether.core.errors import BadRequestError
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.store import audit as audit_store

router = APIRouter(tags=["audit"])


class AuditEntryOut(BaseModel):
    seq: int
    id: str
    at: str
    actor: str
    action: str
    subject: str | None
    data: Any
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


class VerifyOut(BaseModel):
    ok: bool
    count: int
    first_bad_seq: int | None
    problem: str | None
    head_hash: str
    first_bad: AuditEntryOut | None = None


def _cursor(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise BadRequestError("cursor must be the next_cursor of a previous page")
    return int(raw)


@router.get(
    "/audit",
    response_model=AuditPage,
    summary="Audit log entries, newest first",
    description="Filter by `action` (policy.applied, policy.decision, approval.decided, "
    "run.killed, key.created, ...) and `subject`; pass `next_cursor` back as `cursor`.",
)
def list_audit(
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
    action: str | None = Query(None, max_length=64),
    subject: str | None = Query(None, max_length=500),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = None,
) -> dict[str, Any]:
    entries, nxt = audit_store.list_entries(
        state.engine, after_seq=_cursor(cursor), limit=limit, action=action, subject=subject
    )
    return {
        "items": [e.to_dict() for e in entries],
        "next_cursor": str(nxt) if nxt is not None else None,
    }


@router.get(
    "/audit/verify",
    response_model=VerifyOut,
    summary="Verify the hash chain",
    description="Recomputes every link; `first_bad_seq` names the first tampered entry.",
)
def verify_audit(
    state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> dict[str, Any]:
    report = audit_store.verify(state.engine)
    out = report.to_dict()
    if report.first_bad_seq is not None:
        bad = audit_store.get_entry(state.engine, report.first_bad_seq)
        out["first_bad"] = bad.to_dict() if bad else None
    return out


@router.get(
    "/audit/export",
    summary="Every entry as JSON lines, oldest first",
    response_class=StreamingResponse,
)
def export_audit(
    state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> StreamingResponse:
    def lines() -> Iterator[str]:
        for entry in audit_store.iter_entries(state.engine):
            yield audit_store.jsonl(entry)

    return StreamingResponse(lines(), media_type="application/x-ndjson")
