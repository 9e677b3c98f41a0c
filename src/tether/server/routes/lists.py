"""`/api/v1/lists`: named lists kept in the registry (contacts, payees, allowed domains) that
policies refer to with `lists: {NAME: {registry: LIST}}`. Reads need `read`, writes `admin`;
every change is audited (list.created, list.replaced, list.changed, list.deleted)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.server.openapi import errors
from tether.store import lists as list_store
from tether.store import policies as policy_store

router = APIRouter(tags=["lists"])

Entry = str | int | float


class ListSummary(BaseModel):
    name: str = Field(examples=["finance-payees"])
    description: str | None
    size: int
    version: int
    updated_by: str | None
    created_at: str
    updated_at: str


class ListDetail(ListSummary):
    entries: list[str]


class ListPage(BaseModel):
    items: list[ListSummary]
    next_cursor: str | None = None


class ListPut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entries: list[Entry] = Field(max_length=list_store.MAX_ENTRIES,
                                 examples=[["DE89 3704 0044 0532 0130 00"]])  # fmt: skip
    description: str | None = Field(None, max_length=2000)


class ListEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    add: list[Entry] = Field(default_factory=list, max_length=list_store.MAX_ENTRIES)
    remove: list[Entry] = Field(default_factory=list, max_length=list_store.MAX_ENTRIES)


@router.get("/lists", response_model=ListPage, summary="The registry's named lists")
async def list_lists(
    state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> dict[str, Any]:
    found = await run_in_threadpool(list_store.all_lists, state.engine)
    return {"items": [n.to_dict(entries=False) for n in found], "next_cursor": None}


@router.get("/lists/{name}", response_model=ListDetail, summary="One named list with entries")
async def get_list(
    name: str, state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> dict[str, Any]:
    found = await run_in_threadpool(list_store.get_list, state.engine, name)
    return found.to_dict()


@router.put("/lists/{name}", response_model=ListDetail, summary="Create or replace a named list")
async def put_list(
    name: str,
    body: ListPut,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    found = await run_in_threadpool(lambda: list_store.put_list(
        state.engine, name, body.entries, actor=principal.actor, now=datetime.now(UTC),
        description=body.description))  # fmt: skip
    return found.to_dict()


@router.patch("/lists/{name}", response_model=ListDetail, summary="Add and remove entries")
async def edit_list(
    name: str,
    body: ListEdit,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    found = await run_in_threadpool(lambda: list_store.edit_list(
        state.engine, name, add=body.add, remove=body.remove, actor=principal.actor,
        now=datetime.now(UTC)))  # fmt: skip
    return found.to_dict()


@router.delete("/lists/{name}", status_code=204, summary="Delete a list no policy names",
               responses=errors(409))  # fmt: skip
async def delete_list(
    name: str,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> Response:
    def work() -> None:
        users = policy_store.agents_using_list(state.engine, name)
        list_store.delete_list(state.engine, name, actor=principal.actor, now=datetime.now(UTC),
                               used_by=users)  # fmt: skip

    await run_in_threadpool(work)
    return Response(status_code=204)
