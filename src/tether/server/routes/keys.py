"""`/api/v1/keys`: create (the secret is returned once, with an optional lifetime), list (with
each key's age and rotation status), rotate with an overlap, and revoke API keys. Admin only;
every create, rotation and revoke is written to the audit log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from tether.core.durations import parse_duration
from tether.server.auth import Principal, forget_cached_keys, require
from tether.server.deps import State, get_state
from tether.server.openapi import errors
from tether.store import keys as key_store

router = APIRouter(tags=["keys"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scopes: list[str] = Field(min_length=1, examples=[["agent", "ingest"]],
                              description="admin | ingest | agent | read")  # fmt: skip
    agent: str | None = Field(None, max_length=200, description="required with the agent scope")
    name: str | None = Field(None, max_length=200)
    expires_in: str | None = Field(None, max_length=20, examples=["90d"],
                                   description="a lifetime: 90s, 15m, 1h, 30d, 2w")  # fmt: skip


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlap: str = Field("1h", max_length=20, description="how long the old key keeps working")
    expires_in: str | None = Field(
        None, max_length=20, description="the new key's lifetime (default: the old one's)"
    )


class KeyOut(BaseModel):
    id: str
    name: str | None
    prefix: str
    scopes: list[str]
    agent: str | None
    created_at: str
    last_used_at: str | None
    revoked_at: str | None
    expires_at: str | None = Field(description="refused from then on (a lifetime or an overlap)")
    replaced_by: str | None = Field(description="the key that replaced this one (rotated)")
    age_s: float
    status: Literal["ok", "rotate_soon", "rotating", "expired", "too_old", "revoked"] = Field(
        description="too_old: past keys.max_age_days; rotate_soon: within keys.warn_days of it"
    )


class KeyCreated(KeyOut):
    key: str = Field(description="the secret; shown this once, store it now")


class KeyRotated(BaseModel):
    new: KeyCreated
    old: KeyOut


class KeyList(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None = None


@router.post("/keys", status_code=201, response_model=KeyCreated, summary="Create an API key")
async def create_key(
    body: KeyCreate,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    lifetime = _lifetime(body.expires_in)

    def work() -> dict[str, Any]:
        key, secret = key_store.create_key(
            state.engine, scopes=body.scopes, agent=body.agent, name=body.name,
            actor=principal.actor, expires_in=lifetime,
        )  # fmt: skip
        return {**describe(state, key, datetime.now(UTC)), "key": secret}

    return await run_in_threadpool(work)


def _lifetime(text: str | None) -> timedelta | None:
    return None if text is None else parse_duration(text, what="expires_in")


def describe(state: State, key: key_store.ApiKey, now: datetime) -> dict[str, Any]:
    policy = state.settings.keys
    return key_store.view(key, now=now, max_age_days=policy.max_age_days,
                          warn_days=policy.warn_days)  # fmt: skip


@router.get("/keys", response_model=KeyList, summary="List API keys (never their secrets)")
def list_keys(
    include_revoked: bool = False,
    state: State = Depends(get_state),
    _: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    keys = key_store.list_keys(state.engine, include_revoked=include_revoked)
    now = datetime.now(UTC)
    return {"items": [describe(state, k, now) for k in keys], "next_cursor": None}


@router.post(
    "/keys/{key_id}/rotate", response_model=KeyRotated, responses=errors(404, 409),
    summary="Rotate an API key: a new one now, the old one until the overlap ends",
)  # fmt: skip
async def rotate_key(
    key_id: str,
    body: KeyRotate,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    overlap = parse_duration(body.overlap, what="overlap")
    lifetime = _lifetime(body.expires_in)

    def work() -> dict[str, Any]:
        now = datetime.now(UTC)
        new, secret, old = key_store.rotate_key(
            state.engine, key_id, overlap=overlap, now=now, actor=principal.actor,
            expires_in=lifetime,
        )  # fmt: skip
        return {"new": {**describe(state, new, now), "key": secret},
                "old": describe(state, old, now)}  # fmt: skip

    out = await run_in_threadpool(work)
    forget_cached_keys(state)  # the old key's new expiry applies here at once
    return out


@router.delete("/keys/{key_id}", response_model=KeyOut, summary="Revoke an API key")
async def revoke_key(
    key_id: str,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        key = key_store.revoke_key(state.engine, key_id, actor=principal.actor)
        return describe(state, key, datetime.now(UTC))

    out = await run_in_threadpool(work)
    forget_cached_keys(state)
    return out
