"""`/api/v1/checkpoints` and `/api/v1/threads`: what `TetherSaver` (LangGraph's checkpointer)
calls with the agent's key. Bytes travel base64 in JSON; tether never unpickles or unpacks them.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from tether.core.errors import BadRequestError, BudgetExceededError, NotFoundError, RunKilledError
from tether.gateway.llm.killswitch import kill_run
from tether.server.auth import Principal, require
from tether.server.db_call import run_db, run_pg
from tether.server.deps import State, get_state
from tether.server.openapi import errors
from tether.store import checkpoints as store
from tether.store import checkpoints_pg, checkpoints_sqlite, threads
from tether.store.engine import reading

# a thread or checkpoint may not exist (404) or be settled already (409)
router = APIRouter(tags=["checkpoints"], responses=errors(404, 409))

ID = Field(min_length=1, max_length=64)
THREAD = Field(min_length=1, max_length=200)
NS = Field("", max_length=200)


class RunIn(BaseModel):
    """The run a new thread belongs to and the caps of the LangGraph run config."""

    model_config = ConfigDict(extra="forbid")
    run_id: str | None = Field(None, max_length=64)
    task_id: str | None = Field(None, max_length=200)
    version: str | None = Field(None, max_length=200)
    user: str | None = Field(None, max_length=200)
    max_tokens: int | None = Field(None, ge=1, le=10**12)
    max_iterations: int | None = Field(None, ge=1, le=10**6)
    cost_limit_usd: Decimal | None = Field(None, ge=0, le=1_000_000)


class BlobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=64)
    type: str = Field(max_length=32)
    data: str | None = Field(None, description="base64")
    view: Any = Field(None, description="a JSON preview for the timeline")


class CheckpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    thread_id: str = THREAD
    checkpoint_ns: str = NS
    checkpoint_id: str = ID
    parent_checkpoint_id: str | None = Field(None, max_length=64)
    type: str = Field(max_length=32)
    data: str = Field(description="the checkpoint without its channel values, base64")
    versions: dict[str, str] = Field(description="channel -> version of every channel it holds")
    metadata: dict[str, Any] = {}
    blobs: list[BlobIn] = []
    run: RunIn | None = None


class PutOut(BaseModel):
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    run_id: str


class WriteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    idx: int = Field(ge=-100, le=10**6)
    channel: str = Field(min_length=1, max_length=200)
    type: str = Field(max_length=32)
    data: str | None = None
    view: Any = None


class InterruptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = ID
    value: Any = None
    node: str | None = Field(None, max_length=200)


class WritesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    thread_id: str = THREAD
    checkpoint_ns: str = NS
    checkpoint_id: str = ID
    task_id: str = ID
    task_path: str = Field("", max_length=500)
    writes: list[WriteIn] = Field(max_length=10_000)
    interrupts: list[InterruptIn] = Field([], max_length=1000)
    approval_timeout_s: float = Field(86_400.0, ge=1, le=30 * 86_400)
    run: RunIn | None = None


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    thread_id: str | None = Field(None, max_length=200)
    checkpoint_ns: str | None = Field(None, max_length=200)
    before: str | None = Field(None, max_length=64)
    filter: dict[str, Any] | None = None
    limit: int | None = Field(None, ge=1, le=10_000)


class ThreadIdsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    thread_ids: list[str] = Field(max_length=10_000)


class PruneIn(ThreadIdsIn):
    strategy: Literal["keep_latest", "delete"] = "keep_latest"
    keep: int = Field(1, ge=1, le=100_000, description="checkpoints kept per namespace")


class RunIdsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_ids: list[str] = Field(max_length=10_000)


class CopyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_thread_id: str = THREAD
    target_thread_id: str = THREAD


def caller_of(principal: Principal) -> threads.Caller:
    return threads.Caller(agent=principal.agent, admin=principal.has("admin"))


def _bytes(text: str | None, what: str) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError(f"{what}: not base64") from None


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _link(run: RunIn | None) -> threads.RunLink:
    if run is None:
        return threads.RunLink()
    return threads.RunLink(**run.model_dump())


def _out(t: dict[str, Any]) -> dict[str, Any]:
    """A stored tuple with its bytes as base64."""
    t["data"] = _b64(t["data"])
    for b in t["blobs"]:
        b["data"] = _b64(b["data"])
    for w in t["writes"]:
        w["data"] = _b64(w["data"])
    return t


def _claim_alive(
    conn: Any, body_thread: str, caller: threads.Caller, link: threads.RunLink, now: datetime
) -> threads.Thread:
    thread = threads.claim(conn, body_thread, caller, link, now=now)
    if thread.run_status == "killed":
        raise RunKilledError(
            f"run {thread.run_id} was killed ({thread.kill_reason or 'no reason given'}); start "
            "a new thread to run again",
            code="run_killed",
        )
    return thread


def _checkpoint_of(body: CheckpointIn) -> store.NewCheckpoint:
    return store.NewCheckpoint(
        thread_id=body.thread_id,
        checkpoint_ns=body.checkpoint_ns,
        checkpoint_id=body.checkpoint_id,
        parent_id=body.parent_checkpoint_id,
        type=body.type,
        data=_bytes(body.data, "data") or b"",
        versions=body.versions,
        metadata=body.metadata,
        blobs=[
            store.Blob(b.channel, b.version, b.type, _bytes(b.data, "blobs.data"), b.view)
            for b in body.blobs
        ],
    )


def _put(engine: Engine, body: CheckpointIn, caller: threads.Caller) -> tuple[dict[str, Any], Any]:
    now = datetime.now(UTC)
    cp = _checkpoint_of(body)
    step = body.metadata.get("step")
    link = _link(body.run)
    out = {
        "thread_id": cp.thread_id,
        "checkpoint_ns": cp.checkpoint_ns,
        "checkpoint_id": cp.checkpoint_id,
    }
    if engine.dialect.name == "sqlite" and body.metadata.get("source") != "input":
        with checkpoints_sqlite.driver_connection(engine) as raw:
            run_id = checkpoints_sqlite.put(raw, cp, caller, link, now=now)
        if run_id is not None:
            return {**out, "run_id": run_id}, None
    with engine.begin() as conn:
        thread = _claim_alive(conn, body.thread_id, caller, link, now)
        over = (
            thread.max_iterations is not None
            and isinstance(step, int)
            and body.metadata.get("source") == "loop"
            and step > thread.max_iterations
        )
        if not over:
            if body.metadata.get("source") == "input":
                threads.reopen(conn, thread, now=now)
            store.put(conn, cp, run_id=thread.run_id, now=now)
            if isinstance(step, int):
                threads.note_step(conn, thread, step, now)
    return {**out, "run_id": thread.run_id}, (thread, step) if over else None


@router.post("/checkpoints", response_model=PutOut, summary="Store a checkpoint (TetherSaver.put)")
async def put_checkpoint(
    body: CheckpointIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> dict[str, Any]:
    caller = caller_of(principal)
    if state.pg_async is not None and body.metadata.get("source") != "input":
        # one statement when the thread is the caller's, alive, under its caps; else the
        # general path below (nothing was written)
        stmt = checkpoints_pg.put(
            _checkpoint_of(body), caller, _link(body.run), now=datetime.now(UTC)
        )
        row = await run_pg(state, stmt)
        if row is not None:
            return {
                "thread_id": body.thread_id,
                "checkpoint_ns": body.checkpoint_ns,
                "checkpoint_id": body.checkpoint_id,
                "run_id": row[0],
            }
    out, over = await run_db(state, _put, body, caller)
    if over is not None:
        thread, step = over
        reason = (
            f"max_iterations: super-step {step} of thread {thread.thread_id} is past the "
            f"run's cap of {thread.max_iterations}"
        )
        await kill_run(
            state.killswitch,
            thread.run_id,
            actor=principal.actor,
            reason=reason,
            now=datetime.now(UTC),
        )
        raise BudgetExceededError(
            reason + "; raise max_iterations in the run config to allow more", code="max_iterations"
        )
    return out


def _writes_of(body: WritesIn) -> list[store.Write]:
    return [
        store.Write(w.idx, w.channel, w.type, _bytes(w.data, "writes.data"), w.view)
        for w in body.writes
    ]


def _put_writes(engine: Engine, body: WritesIn, caller: threads.Caller) -> list[Any]:
    now = datetime.now(UTC)
    writes = _writes_of(body)
    link = _link(body.run)
    if engine.dialect.name == "sqlite" and not body.interrupts:
        with checkpoints_sqlite.driver_connection(engine) as raw:
            done = checkpoints_sqlite.put_writes(
                raw,
                thread_id=body.thread_id,
                checkpoint_ns=body.checkpoint_ns,
                checkpoint_id=body.checkpoint_id,
                task_id=body.task_id,
                task_path=body.task_path,
                writes=writes,
                caller=caller,
                link=link,
            )
        if done:
            return []
    with engine.begin() as conn:
        thread = _claim_alive(conn, body.thread_id, caller, link, now)
        store.put_writes(
            conn,
            thread_id=body.thread_id,
            checkpoint_ns=body.checkpoint_ns,
            checkpoint_id=body.checkpoint_id,
            task_id=body.task_id,
            task_path=body.task_path,
            writes=writes,
        )
        held: list[Any] = []
        if body.interrupts:
            _, held = threads.hold_interrupts(
                conn,
                thread,
                [i.model_dump() for i in body.interrupts],
                checkpoint_ns=body.checkpoint_ns,
                checkpoint_id=body.checkpoint_id,
                timeout_s=body.approval_timeout_s,
                now=now,
            )
    return held


@router.post(
    "/checkpoints/writes",
    status_code=204,
    response_class=Response,
    summary="Store a task's pending writes (TetherSaver.put_writes)",
)
async def put_writes(
    body: WritesIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> Response:
    caller = caller_of(principal)
    if state.pg_async is not None and not body.interrupts:
        stmt = checkpoints_pg.put_writes(
            thread_id=body.thread_id,
            checkpoint_ns=body.checkpoint_ns,
            checkpoint_id=body.checkpoint_id,
            task_id=body.task_id,
            task_path=body.task_path,
            writes=_writes_of(body),
            caller=caller,
            link=_link(body.run),
        )
        row = await run_pg(state, stmt)
        if row is not None and row[0]:
            return Response(status_code=204)
    held = await run_db(state, _put_writes, body, caller)
    for approval in held:
        state.webhooks.announce(approval)
    return Response(status_code=204)


def _get_tuple(
    engine: Engine,
    thread_id: str,
    checkpoint_ns: str,
    checkpoint_id: str | None,
    caller: threads.Caller,
) -> dict[str, Any] | None:
    if engine.dialect.name == "sqlite":
        with checkpoints_sqlite.driver_connection(engine) as raw:
            return checkpoints_sqlite.get_tuple(
                raw,
                thread_id=thread_id,
                checkpoint_ns=checkpoint_ns,
                checkpoint_id=checkpoint_id,
                admin=caller.admin,
                agent=caller.agent,
            )
    with reading(engine) as conn:
        return store.get_tuple_in(
            conn,
            thread_id=thread_id,
            checkpoint_ns=checkpoint_ns,
            checkpoint_id=checkpoint_id,
            owned_by=(caller.admin, caller.agent),
        )


@router.get("/checkpoints/tuple", summary="One checkpoint with its blobs and writes")
async def get_tuple(
    thread_id: str = Query(min_length=1, max_length=200),
    checkpoint_ns: str = Query("", max_length=200),
    checkpoint_id: str | None = Query(None, max_length=64),
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent", "read")),
) -> Response:
    caller = threads.Caller(principal.agent, principal.has("admin") or principal.has("read"))
    found: dict[str, Any] | str | None
    if state.pg_async is not None:
        # PostgreSQL builds the JSON itself, base64 and all
        stmt = checkpoints_pg.get_tuple(
            thread_id=thread_id,
            checkpoint_ns=checkpoint_ns,
            checkpoint_id=checkpoint_id,
            caller=caller,
        )
        row = await run_pg(state, stmt)
        found = None if row is None else str(row[0])
    else:
        found = await run_db(state, _get_tuple, thread_id, checkpoint_ns, checkpoint_id, caller)
    if found is None:
        raise NotFoundError(
            f"no checkpoint in thread {thread_id!r}"
            + (f" with id {checkpoint_id!r}" if checkpoint_id else "")
        )
    if isinstance(found, str):
        return Response(found, media_type="application/json")
    # JSON types only (base64 text, stored JSON): dumped as is, without FastAPI's walk over it
    return JSONResponse(_out(found))


@router.post("/checkpoints/search", summary="Checkpoints newest first (TetherSaver.list)")
def search(
    body: SearchIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent", "read")),
) -> dict[str, Any]:
    found = store.search(
        state.engine,
        agent=principal.agent,
        admin=principal.has("admin") or principal.has("read"),
        thread_id=body.thread_id,
        checkpoint_ns=body.checkpoint_ns,
        before=body.before,
        filter=body.filter,
        limit=body.limit,
    )
    return {"items": [_out(t) for t in found], "next_cursor": None}


def _owned(state: State, caller: threads.Caller, ids: list[str]) -> list[str]:
    with reading(state.engine) as conn:
        return [t for t in ids if threads.find(conn, t, caller) is not None]


@router.post(
    "/threads/delete",
    status_code=204,
    response_class=Response,
    summary="Delete threads' checkpoints and writes",
)
def delete_threads(
    body: ThreadIdsIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> Response:
    ids = _owned(state, caller_of(principal), body.thread_ids)
    with state.engine.begin() as conn:
        store.delete_threads(conn, ids)
    return Response(status_code=204)


@router.post(
    "/threads/delete-runs",
    status_code=204,
    response_class=Response,
    summary="Delete the checkpoints LangGraph runs wrote",
)
def delete_for_runs(
    body: RunIdsIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> Response:
    with state.engine.begin() as conn:
        store.delete_for_runs(conn, body.run_ids, threads.owned_threads(caller_of(principal)))
    return Response(status_code=204)


@router.post(
    "/threads/copy",
    status_code=204,
    response_class=Response,
    summary="Copy a thread's checkpoints onto another thread",
)
def copy_thread(
    body: CopyIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> Response:
    caller = caller_of(principal)
    now = datetime.now(UTC)
    if not _owned(state, caller, [body.source_thread_id]):
        return Response(status_code=204)  # nothing to copy, as LangGraph's savers do
    with state.engine.begin() as conn:
        src = threads.find(conn, body.source_thread_id, caller)
        assert src is not None
        threads.claim(
            conn, body.target_thread_id, caller, threads.RunLink(run_id=src.run_id), now=now
        )
        store.copy_thread(conn, body.source_thread_id, body.target_thread_id)
    return Response(status_code=204)


@router.post("/threads/prune", summary="Keep the newest N checkpoints per thread and namespace")
def prune(
    body: PruneIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> dict[str, int]:
    ids = _owned(state, caller_of(principal), body.thread_ids)
    before = sum(store.count(state.engine, t) for t in ids) if body.strategy == "delete" else 0
    with state.engine.begin() as conn:
        if body.strategy == "delete":
            store.delete_threads(conn, ids)
            return {"removed": before}
        return {"removed": store.prune(conn, ids, keep=body.keep)}
