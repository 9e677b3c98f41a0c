"""Running a graph under tether: every pause (an `interrupt()` or `interrupt_before` a node) is a
tether approval, decided in the console, CLI, API or a chat webhook; the decision resumes the
graph with `Command(resume=...)`. `tether runs resume` requests are taken with
`resume_requested`, which is also how a Job-style agent that has exited picks its runs up.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from tether.integrations._wire import view
from tether.integrations.langgraph._saver import TetherSaver


@dataclass
class Outcome:
    """Where a graph stands after `invoke`: done, waiting for people, or stopped by a denial."""

    status: Literal["done", "awaiting_approval", "denied"]
    result: Any
    run_id: str
    pending: list[str] = field(default_factory=list)  # approval ids still undecided
    denied_by: str | None = None


def decision_value(decision: dict[str, Any]) -> dict[str, Any]:
    """What `interrupt()` returns in the graph once a person decided."""
    return {
        "approved": decision["status"] == "approved",
        "reason": decision.get("reason"),
        "decided_by": decision.get("decided_by"),
    }


def saver_of(graph: Any) -> TetherSaver:
    saver = getattr(graph, "checkpointer", None)
    if not isinstance(saver, TetherSaver):
        raise TypeError("compile the graph with checkpointer=TetherSaver(...) to run it here")
    return saver


def _thread_config(config: RunnableConfig) -> RunnableConfig:
    """The config without a checkpoint id: the thread's latest state."""
    conf = {k: v for k, v in config.get("configurable", {}).items() if k != "checkpoint_id"}
    return {**config, "configurable": conf}


def _pauses(graph: Any, config: RunnableConfig) -> tuple[Any, list[dict[str, Any]], bool]:
    return _waits_for(graph.get_state(config))


async def _apauses(graph: Any, config: RunnableConfig) -> tuple[Any, list[dict[str, Any]], bool]:
    return _waits_for(await graph.aget_state(config))


def _waits_for(snap: Any) -> tuple[Any, list[dict[str, Any]], bool]:
    """The snapshot and what it waits for: interrupt() values, or the nodes it was told to stop
    before (`interrupt_before`); the flag says which."""
    if snap.interrupts:
        node_by_id = {i.id: t.name for t in snap.tasks for i in t.interrupts}
        items = [
            {"id": i.id, "value": view(i.value), "node": node_by_id.get(i.id)}
            for i in snap.interrupts
        ]
        return snap, items, True
    checkpoint_id = snap.config["configurable"].get("checkpoint_id", "")
    items = []
    for node in snap.next:
        digest = hashlib.sha256(f"before\0{checkpoint_id}\0{node}".encode()).hexdigest()[:40]
        items.append(
            {
                "id": f"before_{digest}",
                "node": node,
                "value": {"interrupt_before": node, "state": view(snap.values)},
            }
        )
    return snap, items, False


def invoke(graph: Any, input: Any, config: RunnableConfig, *, wait_s: float = 3600.0) -> Outcome:
    """`graph.invoke`, then for every pause: hold it as a tether approval, wait up to `wait_s`
    for the decisions and resume with them; ends the run when the graph is done.

        outcome = invoke(graph, {"invoice": "INV-7"}, {"configurable": {"thread_id": "INV-7"}})

    Returns `awaiting_approval` (with the pending approval ids) when people have not decided
    in time: the agent may exit, and `resume_requested` (or `invoke(graph, None, config)`)
    goes on later. A denied `interrupt_before` ends the run as failed; a denied `interrupt()`
    resumes with `{"approved": False, ...}` and the graph decides.
    """
    saver = saver_of(graph)
    thread = _thread_config(config)
    thread_id = str(thread["configurable"]["thread_id"])
    if input is None and config["configurable"].get("checkpoint_id") is None:
        # going on with a paused thread: its pause must be decided first, or `invoke(None)`
        # would walk past an `interrupt_before` that nobody approved
        snap = graph.get_state(thread)
        result = snap.values if snap.next else graph.invoke(None, config)
    else:
        result = graph.invoke(input, config)
    deadline = time.monotonic() + wait_s
    while True:
        snap, items, from_interrupt = _pauses(graph, thread)
        run_id = saver.run_id(thread)
        if not snap.next and not items:
            saver.finish(thread, "succeeded", output=result)
            return Outcome("done", result, run_id)
        checkpoint_id = snap.config["configurable"].get("checkpoint_id")
        approvals = saver.hold(thread_id, items, checkpoint_id)
        decisions = [
            saver.wait_approval(a, max(0.0, deadline - time.monotonic())) for a in approvals
        ]
        pending = [a for a, d in zip(approvals, decisions, strict=True) if d["status"] == "pending"]
        if pending:
            return Outcome("awaiting_approval", result, run_id, pending)
        if from_interrupt:
            resume = {i["id"]: decision_value(d) for i, d in zip(items, decisions, strict=True)}
            result = graph.invoke(Command(resume=resume), thread)
            continue
        denied = next((d for d in decisions if d["status"] != "approved"), None)
        if denied is not None:
            saver.finish(thread, "failed", error=_denial(snap.next[0], denied))
            return Outcome("denied", result, run_id, denied_by=denied.get("decided_by"))
        result = graph.invoke(None, thread)


def _denial(node: str, denied: dict[str, Any]) -> str:
    by = denied.get("decided_by")
    reason = f": {denied['reason']}" if denied.get("reason") else ""
    return f"{node} was {denied['status']} by {by}{reason}"


async def ainvoke(
    graph: Any, input: Any, config: RunnableConfig, *, wait_s: float = 3600.0
) -> Outcome:
    """`invoke` for async graphs and agents: `graph.ainvoke`, the saver's async calls, and the
    wait for people's decisions without blocking the event loop.

        outcome = await ainvoke(graph, {"invoice": "INV-7"}, {"configurable": {"thread_id": "7"}})
    """
    saver = saver_of(graph)
    thread = _thread_config(config)
    thread_id = str(thread["configurable"]["thread_id"])
    if input is None and config["configurable"].get("checkpoint_id") is None:
        snap = await graph.aget_state(thread)  # a pause must be decided first, as in `invoke`
        result = snap.values if snap.next else await graph.ainvoke(None, config)
    else:
        result = await graph.ainvoke(input, config)
    deadline = time.monotonic() + wait_s
    while True:
        snap, items, from_interrupt = await _apauses(graph, thread)
        run_id = await saver.arun_id(thread)
        if not snap.next and not items:
            await saver.afinish(thread, "succeeded", output=result)
            return Outcome("done", result, run_id)
        checkpoint_id = snap.config["configurable"].get("checkpoint_id")
        approvals = await saver.ahold(thread_id, items, checkpoint_id)
        decisions = [
            await saver.await_approval(a, max(0.0, deadline - time.monotonic())) for a in approvals
        ]
        pending = [a for a, d in zip(approvals, decisions, strict=True) if d["status"] == "pending"]
        if pending:
            return Outcome("awaiting_approval", result, run_id, pending)
        if from_interrupt:
            resume = {i["id"]: decision_value(d) for i, d in zip(items, decisions, strict=True)}
            result = await graph.ainvoke(Command(resume=resume), thread)
            continue
        denied = next((d for d in decisions if d["status"] != "approved"), None)
        if denied is not None:
            await saver.afinish(thread, "failed", error=_denial(snap.next[0], denied))
            return Outcome("denied", result, run_id, denied_by=denied.get("decided_by"))
        result = await graph.ainvoke(None, thread)


def resume_requested(
    graph: Any,
    *,
    thread_id: str | None = None,
    wait_s: float = 3600.0,
    configurable: dict[str, Any] | None = None,
) -> list[Outcome]:
    """Takes this agent's `tether runs resume` requests and runs each: from the requested
    checkpoint (default: the latest), with `--update` applied to the state first.

    A Job-style agent that exited while waiting calls this when it starts again (e.g. a
    Kubernetes Job re-created after `tether runs resume RUN`); a long-running one polls it.
    """
    saver = saver_of(graph)
    outcomes = []
    for req in saver.take_resumes(thread_id):
        conf: dict[str, Any] = {**(configurable or {}), "thread_id": req["thread_id"]}
        if req.get("checkpoint_id"):
            conf["checkpoint_id"] = req["checkpoint_id"]
        config: RunnableConfig = {"configurable": conf}
        if req.get("update"):
            config = graph.update_state(config, req["update"])
            config = {"configurable": {**conf, **config["configurable"]}}
        outcomes.append(invoke(graph, None, config, wait_s=wait_s))
    return outcomes


async def aresume_requested(
    graph: Any,
    *,
    thread_id: str | None = None,
    wait_s: float = 3600.0,
    configurable: dict[str, Any] | None = None,
) -> list[Outcome]:
    """`resume_requested` for async graphs and agents."""
    saver = saver_of(graph)
    outcomes = []
    for req in await saver.atake_resumes(thread_id):
        conf: dict[str, Any] = {**(configurable or {}), "thread_id": req["thread_id"]}
        if req.get("checkpoint_id"):
            conf["checkpoint_id"] = req["checkpoint_id"]
        config: RunnableConfig = {"configurable": conf}
        if req.get("update"):
            config = await graph.aupdate_state(config, req["update"])
            config = {"configurable": {**conf, **config["configurable"]}}
        outcomes.append(await ainvoke(graph, None, config, wait_s=wait_s))
    return outcomes
