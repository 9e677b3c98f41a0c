"""`/api/v1/runs/{run_id}/provenance`: the run's data-flow tags and the values that entered it
(trusted, untrusted or both, with their first sources); `.../declassify` vouches for a value."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.store import provenance
from tether.store import runs as run_store
from tether.store import tools as registry

router = APIRouter(tags=["provenance"])


class DeclassifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(min_length=1, max_length=2000, examples=["bob@partner.example"])
    reason: str | None = Field(None, max_length=2000)


def _exists(state: State, run_id: str) -> None:
    run_store.get_run(state.engine, run_id)  # NotFoundError (404) when there is none


@router.get("/runs/{run_id}/provenance", summary="A run's taint and value provenance")
async def get_provenance(
    run_id: str,
    limit: int = Query(500, ge=1, le=5000),
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
) -> dict[str, Any]:
    def load() -> dict[str, Any]:
        _exists(state, run_id)
        values = provenance.list_values(state.engine, run_id, limit=limit)
        return {
            "run_id": run_id,
            "tags": sorted(registry.run_tags(state.engine, run_id)),
            "untrusted_only": sum(1 for v in values if v["origin"] == "untrusted"),
            "items": values,
        }

    return await run_in_threadpool(load)


@router.post("/runs/{run_id}/declassify", summary="Vouch for a value in this run (audited)")
async def declassify(
    run_id: str,
    body: DeclassifyIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        _exists(state, run_id)
        atoms = provenance.declassify(state.engine, run_id, body.value, actor=principal.actor,
                                      reason=body.reason, now=datetime.now(UTC))  # fmt: skip
        return {"run_id": run_id, "declassified": [{"kind": a.kind, "value": a.value}
                                                   for a in atoms]}  # fmt: skip

    return await run_in_threadpool(run)
