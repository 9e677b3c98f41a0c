"""Liveness (`/healthz`) and readiness (`/readyz`: the database answers and is migrated).

Without a key `/readyz` says only ready or not: the database driver's message names hosts,
users and paths, so it is shown only to a caller with a valid key (any scope)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from tether.server.auth import authenticate, bearer_secret
from tether.server.deps import State, get_state
from tether.store.engine import reading
from tether.store.migrate import current_revision, head_revision

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
def readyz(request: Request, state: State = Depends(get_state)) -> JSONResponse:
    reason: str | None = None
    rev = head = None
    try:
        with reading(state.engine) as conn:
            conn.execute(text("SELECT 1"))
        rev, head = current_revision(state.engine), head_revision()
    except Exception as exc:  # readiness reports any database failure instead of raising
        reason = f"database unavailable: {type(exc).__name__}: {exc}"
    if reason is None and rev != head:
        reason = f"database at revision {rev}, expected {head}: run `tether db upgrade`"
    if reason is None:
        return JSONResponse({"status": "ok", "revision": rev})
    body: dict[str, str] = {"status": "unavailable"}
    if _may_see_details(state, request):
        body["reason"] = reason
    return JSONResponse(body, status_code=503)


def _may_see_details(state: State, request: Request) -> bool:
    secret = bearer_secret(request)
    if not secret:
        return False
    try:
        authenticate(state, secret)
    except Exception:  # a bad key, or the key store is in the database that is failing
        return False
    return True
