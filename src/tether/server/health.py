"""Liveness (`/healthz`) and readiness (`/readyz`: the database answers and is migrated)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text

from tether.server.deps import State, get_state
from tether.store.engine import reading
from tether.store.migrate import current_revision, head_revision

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
def readyz(state: State = Depends(get_state)) -> JSONResponse:
    try:
        with reading(state.engine) as conn:
            conn.execute(text("SELECT 1"))
        rev, head = current_revision(state.engine), head_revision()
    except Exception as exc:  # readiness reports any database failure instead of raising
        return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
    if rev != head:
        return JSONResponse(
            {"status": "unavailable", "reason": f"database at {rev}, expected {head}"},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "revision": rev})
