"""`/api/v1/tools`: the tool registry: list, show, register an HTTP tool, approve a changed one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tether.core.policy_schema import parse_rate_limit
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.store import tools as registry

router = APIRouter(tags=["tools"])


class HttpToolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        min_length=1,
        max_length=300,
        pattern=r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_.\-]+$",
        examples=["crm.lookup"],
        description="server.tool",
    )
    url: str = Field(min_length=1, max_length=2000, pattern=r"^https?://")
    description: str = Field("", max_length=10_000)
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    tags: list[str] = Field(default_factory=list)
    owner: str | None = Field(None, max_length=200)
    rate_limit: str | None = Field(None, examples=["10/minute"])

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is not None:
            parse_rate_limit(v)  # ValueError carries the fix
        return v


def http_spec(body: HttpToolIn) -> registry.ToolSpec:
    return registry.ToolSpec(
        name=body.name, server=body.name.split(".", 1)[0], kind="http",
        description=body.description, input_schema=body.input_schema,
        tags=registry.check_tags(body.tags), owner=body.owner, rate_limit=body.rate_limit,
        url=body.url,
    )  # fmt: skip


@router.get("/tools", summary="List the tool registry")
async def list_tools(
    server: str | None = Query(None, max_length=200),
    status: str | None = Query(None, description="approved | changed"),
    state: State = Depends(get_state),
    principal: Principal = Depends(require("read", "agent")),
) -> dict[str, Any]:
    items = await run_in_threadpool(registry.list_tools, state.engine, server=server,
                                    status=status)  # fmt: skip
    return {"items": [t.to_dict() for t in items], "next_cursor": None}


@router.get("/tools/{name}", summary="One tool (with `diff` from its pin when changed)")
async def get_tool(
    name: str,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("read", "agent")),
) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        tool = registry.require_tool(state.engine, name)
        return {**tool.to_dict(), "diff": registry.pin_diff(state.engine, tool)}

    return await run_in_threadpool(work)


@router.post("/tools", status_code=201, summary="Register (or update) an HTTP tool")
async def register_tool(
    body: HttpToolIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    spec = http_spec(body)
    [tool] = await run_in_threadpool(lambda: registry.sync_tools(
        state.engine, [spec], now=datetime.now(UTC), actor=principal.actor))  # fmt: skip
    return tool.to_dict()


@router.post("/tools/{name}/approve", summary="Re-pin a changed tool and unblock it")
async def approve_tool(
    name: str,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    tool = await run_in_threadpool(lambda: registry.approve_tool(
        state.engine, name, actor=principal.actor, now=datetime.now(UTC)))  # fmt: skip
    return tool.to_dict()
