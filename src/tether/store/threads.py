"""LangGraph threads as tether sees them: each owned by one agent and linked to one run, with the
run's hard caps, its interrupts held as approvals, resume requests and tool-call idempotency keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update

from tether.core.errors import ConflictError, NotFoundError, PermissionDeniedError
from tether.core.ids import make_id
from tether.core.money import usd_to_nusd
from tether.core.records import RunAttribution
from tether.store import approvals as approval_store
from tether.store.engine import reading
from tether.store.ingest import ensure_run, set_run_status
from tether.store.tables import (
    checkpoint_interrupts,
    checkpoint_resumes,
    checkpoint_threads,
    checkpoints,
    run_caps,
    runs,
    tool_call_keys,
)
from tether.store.upsert import insert_on_conflict

INTERRUPT_TOOL = "langgraph.interrupt"


@dataclass(frozen=True)
class Caller:
    """Who speaks: the key's agent, and whether it may see every agent's threads."""

    agent: str | None
    admin: bool


@dataclass(frozen=True)
class RunLink:
    """What a saver says about the run a new thread belongs to, and the caps it asks for."""

    run_id: str | None = None
    task_id: str | None = None
    version: str | None = None
    user: str | None = None
    max_tokens: int | None = None
    max_iterations: int | None = None
    cost_limit_usd: Decimal | None = None


@dataclass(frozen=True)
class Thread:
    thread_id: str
    agent: str | None
    run_id: str
    max_iterations: int | None
    steps: int = 0
    # the run's status and kill reason when `claim` read them (one query, not two)
    run_status: str | None = None
    kill_reason: str | None = None


def thread_run_id(agent: str | None, thread_id: str) -> str:
    """The run a thread maps to when the saver names none: stable, so a restarted agent
    process continues the same run."""
    digest = hashlib.sha256(f"{agent or ''}\0{thread_id}".encode()).hexdigest()
    return f"run_lg{digest[:24]}"


def _thread(row: Any) -> Thread:
    m = row._mapping
    return Thread(
        row.thread_id,
        row.agent,
        row.run_id,
        row.max_iterations,
        row.steps or 0,
        m.get("run_status"),
        m.get("kill_reason"),
    )


def _with_run(thread_id: str) -> Any:
    """The thread row with its run's status and kill reason."""
    t, c = checkpoint_threads, run_caps.c
    return (
        select(
            t,
            runs.c.status.label("run_status"),
            runs.c.kill_reason,
            c.run_id.label("caps_run_id"),
            c.max_cost_nusd,
            c.max_tokens,
            c.max_llm_calls,
        )
        .select_from(
            t.outerjoin(runs, runs.c.id == t.c.run_id).outerjoin(
                run_caps, run_caps.c.run_id == t.c.run_id
            )
        )
        .where(t.c.thread_id == thread_id)
    )


def find(conn: Connection, thread_id: str, caller: Caller) -> Thread | None:
    """The thread if the caller may see it; another agent's thread is None (as if absent)."""
    row = conn.execute(
        select(checkpoint_threads).where(checkpoint_threads.c.thread_id == thread_id)
    ).first()
    if row is None or not (caller.admin or row.agent == caller.agent):
        return None
    return _thread(row)


def visible(engine: Engine, thread_id: str, caller: Caller) -> bool:
    with reading(engine) as conn:
        return find(conn, thread_id, caller) is not None


def owned_threads(caller: Caller) -> Any:
    """A subquery of the thread ids the caller may touch."""
    t = checkpoint_threads.c
    q = select(t.thread_id)
    if caller.admin:
        return q
    return q.where(t.agent == caller.agent if caller.agent is not None else t.agent.is_(None))


def claim(
    conn: Connection, thread_id: str, caller: Caller, link: RunLink, *, now: datetime
) -> Thread:
    """The caller's thread, created with its run on first use. Caps only ever tighten: a later
    run config cannot loosen what an earlier one set."""
    row = conn.execute(_with_run(thread_id)).first()
    if row is not None:
        if not caller.admin and row.agent != caller.agent:
            raise PermissionDeniedError(
                f"thread {thread_id!r} belongs to agent {row.agent}; use a thread id of your own",
                code="wrong_agent",
            )
        found = _thread(row)
        tighter = _min(found.max_iterations, link.max_iterations)
        if tighter != found.max_iterations:
            conn.execute(
                update(checkpoint_threads)
                .where(checkpoint_threads.c.thread_id == thread_id)
                .values(max_iterations=tighter)
            )
            found = dataclasses.replace(found, max_iterations=tighter)
        # the run's caps came with the thread row: no second read when nothing tightens
        _set_caps(conn, found.run_id, link, now, row if row.caps_run_id is not None else None)
        return found
    run_id = link.run_id or thread_run_id(caller.agent, thread_id)
    owner = conn.execute(select(runs.c.agent).where(runs.c.id == run_id)).first()
    if owner is not None and owner.agent and not caller.admin and owner.agent != caller.agent:
        raise PermissionDeniedError(
            f"run {run_id} belongs to agent {owner.agent}; use a run id of your own",
            code="wrong_agent",
        )
    attribution = RunAttribution(
        agent=caller.agent, version=link.version, task_id=link.task_id or thread_id, user=link.user
    )
    ensure_run(
        conn, run_id, trace_id=None, attribution=attribution, started_at=now, source="sdk", now=now
    )
    insert_on_conflict(
        conn,
        checkpoint_threads,
        [
            {
                "thread_id": thread_id,
                "agent": caller.agent,
                "run_id": run_id,
                "max_iterations": link.max_iterations,
                "steps": 0,
                "created_at": now,
                "updated_at": now,
            }
        ],
        ("thread_id",),
    )
    _set_caps(conn, run_id, link, now)
    again = conn.execute(_with_run(thread_id)).one()
    return _thread(again)


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


_UNREAD = object()


def _set_caps(
    conn: Connection, run_id: str, link: RunLink, now: datetime, known: Any = _UNREAD
) -> None:
    """Tightens the run's caps to the link's; `known` is the run_caps row read already (None:
    the run has none yet)."""
    cost = usd_to_nusd(link.cost_limit_usd) if link.cost_limit_usd is not None else None
    if cost is None and link.max_tokens is None and link.max_iterations is None:
        return
    c = run_caps.c
    row = (
        conn.execute(select(run_caps).where(c.run_id == run_id)).first()
        if known is _UNREAD
        else known
    )
    new = {
        "max_cost_nusd": _min(row.max_cost_nusd if row else None, cost),
        "max_tokens": _min(row.max_tokens if row else None, link.max_tokens),
        "max_llm_calls": _min(row.max_llm_calls if row else None, link.max_iterations),
    }
    if row is None:
        insert_on_conflict(
            conn,
            run_caps,
            [{"run_id": run_id, "updated_at": now, **new}],
            ("run_id",),
            ("max_cost_nusd", "max_tokens", "max_llm_calls"),
        )
    elif any(getattr(row, k) != v for k, v in new.items()):
        conn.execute(update(run_caps).where(c.run_id == run_id).values(updated_at=now, **new))


def caps(engine: Engine, run_id: str) -> dict[str, int | None] | None:
    """The caps a run set for itself (None: it set none)."""
    with reading(engine) as conn:
        return caps_in(conn, run_id)


def caps_in(conn: Connection, run_id: str) -> dict[str, int | None] | None:
    """`caps` inside an open transaction (the gateway reads them with the run it creates)."""
    row = conn.execute(_CAPS, {"run_id": run_id}).first()
    if row is None:
        return None
    return {
        "max_cost_nusd": row.max_cost_nusd,
        "max_tokens": row.max_tokens,
        "max_llm_calls": row.max_llm_calls,
    }


_CAPS = select(run_caps).where(run_caps.c.run_id == bindparam("run_id"))


def note_step(conn: Connection, thread: Thread, step: int, now: datetime) -> None:
    if step <= thread.steps:
        return  # a replayed or earlier step: nothing to count
    conn.execute(
        update(checkpoint_threads)
        .where(
            checkpoint_threads.c.thread_id == thread.thread_id, checkpoint_threads.c.steps < step
        )
        .values(steps=step, updated_at=now)
    )


# ---------------------------------------------------------------- interrupts as approvals


def hold_interrupts(
    conn: Connection,
    thread: Thread,
    interrupts: list[dict[str, Any]],
    *,
    checkpoint_ns: str,
    checkpoint_id: str | None,
    timeout_s: float,
    now: datetime,
) -> tuple[list[str], list[approval_store.Approval]]:
    """One pending approval per interrupt id not held yet (a replayed write holds nothing new);
    returns the approval ids of all of them, held now or before, and the ones held now."""
    ids: list[str] = []
    new: list[approval_store.Approval] = []
    i = checkpoint_interrupts.c
    for item in interrupts:
        interrupt_id = str(item["id"])[:64]
        found = conn.execute(
            select(i.approval_id).where(
                i.thread_id == thread.thread_id, i.interrupt_id == interrupt_id
            )
        ).scalar()
        if found is not None:
            ids.append(found)
            continue
        node = item.get("node")
        approval = approval_store.create_in(
            conn,
            tool=f"{INTERRUPT_TOOL}.{node}" if node else INTERRUPT_TOOL,
            arguments=item.get("value"),
            run_id=thread.run_id,
            agent=thread.agent,
            rule="langgraph interrupt",
            reason=item.get("reason") or "the graph asked a person",
            timeout_s=timeout_s,
            now=now,
        )
        conn.execute(
            checkpoint_interrupts.insert().values(
                approval_id=approval.id,
                thread_id=thread.thread_id,
                interrupt_id=interrupt_id,
                checkpoint_ns=checkpoint_ns,
                checkpoint_id=checkpoint_id,
                created_at=now,
            )
        )
        ids.append(approval.id)
        new.append(approval)
    return ids, new


def interrupt_decisions(engine: Engine, thread_id: str) -> list[dict[str, Any]]:
    """Every interrupt of the thread with its approval's state, oldest first."""
    i = checkpoint_interrupts.c
    q = (
        select(i.interrupt_id, i.approval_id, i.checkpoint_id)
        .where(i.thread_id == thread_id)
        .order_by(i.created_at, i.approval_id)
    )
    with reading(engine) as conn:
        rows = conn.execute(q).all()
    out = []
    for r in rows:
        a = approval_store.get(engine, r.approval_id)
        out.append(
            {
                "interrupt_id": r.interrupt_id,
                "approval_id": a.id,
                "status": a.status,
                "reason": a.decision_reason,
                "decided_by": a.decided_by,
                "checkpoint_id": r.checkpoint_id,
            }
        )
    return out


# ---------------------------------------------------------------- resume requests


def threads_of_run(engine: Engine, run_id: str) -> list[str]:
    t = checkpoint_threads.c
    with reading(engine) as conn:
        return list(
            conn.execute(
                select(t.thread_id).where(t.run_id == run_id).order_by(t.created_at)
            ).scalars()
        )


def request_resume(
    engine: Engine,
    run_id: str,
    *,
    checkpoint_id: str | None,
    update_values: Any,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """Records that the run should go on from `checkpoint_id` (default: its latest), with
    `update_values` applied to the state first; the agent's saver takes it."""
    threads = threads_of_run(engine, run_id)
    if not threads:
        raise NotFoundError(
            f"run {run_id} has no LangGraph checkpoints; only runs that use "
            "TetherSaver can be resumed"
        )
    thread_id = threads[-1]
    c = checkpoints.c
    with engine.begin() as conn:
        if checkpoint_id is not None:
            hit = conn.execute(
                select(c.thread_id).where(
                    c.thread_id.in_(threads), c.checkpoint_id == checkpoint_id
                )
            ).scalar()
            if hit is None:
                raise NotFoundError(
                    f"run {run_id} has no checkpoint {checkpoint_id!r}; see "
                    f"`tether runs checkpoints {run_id}`"
                )
            thread_id = hit
        row = {
            "id": make_id("rsm", os.urandom(12)),
            "thread_id": thread_id,
            "run_id": run_id,
            "checkpoint_id": checkpoint_id,
            "update": update_values,
            "status": "pending",
            "requested_by": actor,
            "created_at": now,
        }
        conn.execute(checkpoint_resumes.insert().values(**row))
    return {**row, "created_at": now.isoformat(), "taken_at": None}


def take_resumes(
    engine: Engine, caller: Caller, *, thread_id: str | None, now: datetime
) -> list[dict[str, Any]]:
    """The pending resume requests of the caller's threads, marked taken (each goes to one
    agent process)."""
    r = checkpoint_resumes.c
    q = select(checkpoint_resumes).where(
        r.status == "pending", r.thread_id.in_(owned_threads(caller))
    )
    if thread_id is not None:
        q = q.where(r.thread_id == thread_id)
    out = []
    with engine.begin() as conn:
        for row in conn.execute(q.order_by(r.created_at)).all():
            done = conn.execute(
                update(checkpoint_resumes)
                .where(r.id == row.id, r.status == "pending")
                .values(status="taken", taken_at=now)
            )
            if done.rowcount:
                out.append(
                    {
                        "id": row.id,
                        "thread_id": row.thread_id,
                        "run_id": row.run_id,
                        "checkpoint_id": row.checkpoint_id,
                        "update": row.update,
                    }
                )
    return out


# ---------------------------------------------------------------- tool-call idempotency keys


def claim_tool_call(
    engine: Engine, thread_id: str, key: str, tool: str, *, now: datetime
) -> dict[str, Any]:
    """`new` for the first claim of a key (the call may run), `done` with the recorded result
    for a call that already ran, `started` for one that began and never reported back."""
    k = tool_call_keys.c
    with engine.begin() as conn:
        row = conn.execute(
            select(tool_call_keys).where(k.thread_id == thread_id, k.key == key)
        ).first()
        if row is None:
            conn.execute(
                tool_call_keys.insert().values(
                    thread_id=thread_id, key=key, tool=tool, status="started", created_at=now
                )
            )
            return {"status": "new", "result": None}
    return {"status": row.status, "result": row.result}


def finish_tool_call(
    engine: Engine, thread_id: str, key: str, result: Any, *, now: datetime
) -> None:
    k = tool_call_keys.c
    with engine.begin() as conn:
        done = conn.execute(
            update(tool_call_keys)
            .where(
                k.thread_id == thread_id,
                k.key == key,
                k.status == "started",
            )
            .values(status="done", result=result, done_at=now)
        )
    if not done.rowcount:
        raise ConflictError(
            f"tool call {key!r} of thread {thread_id!r} was not started or is already done"
        )


# ---------------------------------------------------------------- the end of a run


def finish(
    engine: Engine,
    thread_id: str,
    caller: Caller,
    *,
    status: str,
    output: Any,
    error: str | None,
    now: datetime,
) -> str:
    """Ends the thread's run as `succeeded` or `failed` (a killed run stays killed)."""
    with engine.begin() as conn:
        thread = find(conn, thread_id, caller)
        if thread is None:
            raise NotFoundError(f"no thread {thread_id!r}; store a checkpoint first")
        if (
            set_run_status(conn, thread.run_id, status, now=now, reason=error)
            and output is not None
        ):
            text = output if isinstance(output, str) else json.dumps(output)
            conn.execute(update(runs).where(runs.c.id == thread.run_id).values(output=text))
    return thread.run_id


def reopen(conn: Connection, thread: Thread, *, now: datetime) -> None:
    """A new input on a thread whose run had ended (a chat's next turn) runs it again."""
    conn.execute(
        update(runs)
        .where(runs.c.id == thread.run_id, runs.c.status.in_(("succeeded", "failed")))
        .values(status="running", ended_at=None, updated_at=now)
    )
