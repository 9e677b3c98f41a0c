"""`/api/v1/keys`: create (the secret is returned once), list and revoke API keys. Admin only;
every create and revoke is written to the audit log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from tether.server.auth import Principal, forget_cached_keys, require
from tether.server.deps import State, get_state
from tether.store import keys as key_store

router = APIRouter(tags=["keys"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scopes: list[str] = Field(min_length=1, examples=[["agent", "ingest"]],
                              description="admin | ingest | agent | read")  # fmt: skip
    agent: str | None = Field(None, max_length=200, description="required with the agent scope")
    name: str | None = Field(None, max_length=200)


class KeyOut(BaseModel):
    id: str
    name: str | None
    prefix: str
    scopes: list[str]
    agent: str | None
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class KeyCreated(KeyOut):
    key: str = Field(description="the secret; shown this once, store it now")


class KeyList(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None = None


@router.post("/keys", status_code=201, response_model=KeyCreated, summary="Create an API key")
async def create_key(
    body: KeyCreate,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        key, secret = key_store.create_key(
            state.engine, scopes=body.scopes, agent=body.agent, name=body.name,
            actor=principal.actor,
        )  # fmt: skip
        return {**key.to_dict(), "key": secret}

    return await run_in_threadpool(work)


@router.get("/keys", response_model=KeyList, summary="List API keys (never their secrets)")
def list_keys(
    include_revoked: bool = False,
    state: State = Depends(get_state),
    _: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    keys = key_store.list_keys(state.engine, include_revoked=include_revoked)
    return {"items": [k.to_dict() for k in keys], "next_cursor": None}


@router.delete("/keys/{key_id}", response_model=KeyOut, summary="Revoke an API key")
async def revoke_key(
    key_id: str,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        key = key_store.revoke_key(state.engine, key_id, actor=principal.actor)
        return key.to_dict()

    out = await run_in_threadpool(work)
    forget_cached_keys(state)
    return out
