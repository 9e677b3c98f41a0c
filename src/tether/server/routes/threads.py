"""A run's LangGraph side: its checkpoint timeline, resume requests (`tether runs resume`), the
interrupts held as approvals, and tool-call idempotency keys. The agent's saver and helpers call
the thread routes; people call the run routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from tether.core.errors import NotFoundError
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.server.openapi import errors
from tether.server.routes.checkpoints import NS, THREAD, InterruptIn, RunIn, caller_of
from tether.store import checkpoints as store
from tether.store import runs as run_store
from tether.store import threads
from tether.store.timeline import timeline

# a thread or checkpoint may not exist (404) or be settled already (409)
router = APIRouter(tags=["checkpoints"], responses=errors(404, 409))


class ResumeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    checkpoint_id: str | None = Field(None, max_length=64, description="default: the latest")
    update: dict[str, Any] | None = Field(None, description="state values applied before resuming")


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    thread_id: str = THREAD
    run: RunIn | None = None


class TakeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    thread_id: str | None = Field(None, max_length=200)


class HoldIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    thread_id: str = THREAD
    checkpoint_ns: str = NS
    checkpoint_id: str | None = Field(None, max_length=64)
    interrupts: list[InterruptIn] = Field(min_length=1, max_length=1000)
    approval_timeout_s: float = Field(86_400.0, ge=1, le=30 * 86_400)


class FinishIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    thread_id: str = THREAD
    status: Literal["succeeded", "failed"]
    output: Any = None
    error: str | None = Field(None, max_length=10_000)


class ToolCallIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    thread_id: str = THREAD
    key: str = Field(min_length=1, max_length=300)
    tool: str = Field("", max_length=300)
    result: Any = None
    # claim only: where the call runs (the key gets the step counted along this lineage)
    step: int | None = Field(None, ge=-1, le=10**9)
    checkpoint_ns: str = Field("", max_length=200)
    checkpoint_id: str | None = Field(None, max_length=64)


@router.get("/runs/{run_id}/checkpoints", summary="A run's checkpoints as a timeline")
def run_checkpoints(
    run_id: str,
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
) -> dict[str, Any]:
    run_store.get_run(state.engine, run_id)  # 404 for an unknown run
    return {"items": timeline(state.engine, run_id), "next_cursor": None}


@router.post("/runs/{run_id}/resume", status_code=202, summary="Ask the agent to resume a run")
def resume(
    run_id: str,
    body: ResumeIn | None = None,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    run_store.get_run(state.engine, run_id)
    body = body or ResumeIn(checkpoint_id=None, update=None)
    return threads.request_resume(
        state.engine,
        run_id,
        checkpoint_id=body.checkpoint_id,
        update_values=body.update,
        actor=principal.actor,
        now=datetime.now(UTC),
    )


@router.post("/threads/resumes/take", summary="Take the resume requests of the agent's threads")
def take_resumes(
    body: TakeIn | None = None,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> dict[str, Any]:
    items = threads.take_resumes(
        state.engine,
        caller_of(principal),
        thread_id=body.thread_id if body else None,
        now=datetime.now(UTC),
    )
    return {"items": items, "next_cursor": None}


@router.post("/threads/run", summary="The run a thread belongs to (created on first use)")
def thread_run(
    body: ClaimIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> dict[str, Any]:
    link = threads.RunLink(**body.run.model_dump()) if body.run else threads.RunLink()
    with state.engine.begin() as conn:
        thread = threads.claim(
            conn, body.thread_id, caller_of(principal), link, now=datetime.now(UTC)
        )
    return {
        "thread_id": thread.thread_id,
        "run_id": thread.run_id,
        "max_iterations": thread.max_iterations,
    }


def _hold(state: State, body: HoldIn, caller: threads.Caller) -> tuple[list[str], list[Any]]:
    now = datetime.now(UTC)
    with state.engine.begin() as conn:
        thread = threads.claim(conn, body.thread_id, caller, threads.RunLink(), now=now)
        return threads.hold_interrupts(
            conn,
            thread,
            [i.model_dump() for i in body.interrupts],
            checkpoint_ns=body.checkpoint_ns,
            checkpoint_id=body.checkpoint_id,
            timeout_s=body.approval_timeout_s,
            now=now,
        )


@router.post("/threads/interrupts", summary="Hold a thread's interrupts as approvals")
async def hold(
    body: HoldIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> dict[str, Any]:
    ids, held = await run_in_threadpool(_hold, state, body, caller_of(principal))
    for approval in held:
        state.webhooks.announce(approval)
    return {"approval_ids": ids}


@router.get("/threads/interrupts", summary="A thread's interrupts and their decisions")
def interrupts(
    thread_id: str = Query(min_length=1, max_length=200),
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent", "read")),
) -> dict[str, Any]:
    caller = threads.Caller(principal.agent, principal.has("admin") or principal.has("read"))
    if not threads.visible(state.engine, thread_id, caller):
        raise NotFoundError(f"no thread {thread_id!r}")
    return {"items": threads.interrupt_decisions(state.engine, thread_id), "next_cursor": None}


def _own(state: State, thread_id: str, principal: Principal) -> None:
    """The caller's thread, created on first use: a node can call a tool before LangGraph's
    background put of the thread's first checkpoint has landed."""
    with state.engine.begin() as conn:
        threads.claim(
            conn, thread_id, caller_of(principal), threads.RunLink(), now=datetime.now(UTC)
        )


@router.post("/threads/tool-calls/claim", summary="Claim a side-effecting tool call's key")
def claim_tool_call(
    body: ToolCallIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> dict[str, Any]:
    _own(state, body.thread_id, principal)
    key = body.key
    if body.step is not None:
        step = body.step
        if body.checkpoint_id:
            step -= store.forks_before(
                state.engine, body.thread_id, body.checkpoint_ns, body.checkpoint_id
            )
        key = f"{body.key[:280]}@{step}"
    out = threads.claim_tool_call(state.engine, body.thread_id, key, body.tool,
                                  now=datetime.now(UTC))  # fmt: skip
    return {**out, "key": key}


@router.post("/threads/tool-calls/complete", summary="Record a claimed tool call's result")
def complete_tool_call(
    body: ToolCallIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> dict[str, str]:
    _own(state, body.thread_id, principal)
    threads.finish_tool_call(
        state.engine, body.thread_id, body.key, body.result, now=datetime.now(UTC)
    )
    return {"status": "done"}


@router.post("/threads/finish", summary="End a thread's run (succeeded or failed)")
def finish(
    body: FinishIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> dict[str, str]:
    run_id = threads.finish(
        state.engine,
        body.thread_id,
        caller_of(principal),
        status=body.status,
        output=body.output,
        error=body.error,
        now=datetime.now(UTC),
    )
    return {"run_id": run_id, "status": body.status}
