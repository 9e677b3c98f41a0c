"""`/api/v1/agents`: agents seen in runs, with versions, run counts, cost and last seen."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.server.serialize import agent_resource
from tether.store import agents as agent_store

router = APIRouter(tags=["agents"])

_AGENT_EXAMPLE = {
    "name": "invoice-triage", "owner": None, "description": None,
    "created_at": "2026-11-25T12:00:00+00:00", "last_seen_at": "2026-11-25T12:30:00+00:00",
    "versions": ["v2", "v3"], "runs": 120, "running": 1, "succeeded": 110, "failed": 8,
    "killed": 1, "cost_usd": 3.42, "last_run_at": "2026-11-25T12:30:00+00:00",
}  # fmt: skip


@router.get(
    "/agents",
    summary="List agents",
    responses={200: {"content": {"application/json": {"example": {"items": [_AGENT_EXAMPLE]}}}}},
)
def list_agents(
    state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> dict[str, Any]:
    return {"items": [agent_resource(a) for a in agent_store.list_agents(state.engine)],
            "next_cursor": None}  # fmt: skip


@router.get("/agents/{name}", summary="One agent with per-version statistics")
def get_agent(
    name: str, state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> dict[str, Any]:
    return agent_resource(agent_store.get_agent(state.engine, name))
