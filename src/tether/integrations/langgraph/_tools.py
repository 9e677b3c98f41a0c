"""Side-effecting tools that run once per graph step, however often LangGraph replays the node.

A node that paused at `interrupt()` runs again from its first line when it resumes, and a
resume from an earlier checkpoint replays whole steps; a tool called there would charge the
card or send the email twice. `idempotent` records each call under a key (thread, node path,
step, tool, arguments) in tether: the first call runs, every replay gets the recorded result.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from langgraph.config import get_config

from tether.core.errors import ConflictError
from tether.integrations._wire import jsonable
from tether.integrations.langgraph._saver import TetherSaver

P = ParamSpec("P")
R = TypeVar("R")


def call_key(config: Any, tool: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The idempotency key of a tool call inside a running node, without its step (tether adds
    the step, counted along the checkpoint lineage: see `call_site`)."""
    ns = str(config.get("configurable", {}).get("checkpoint_ns", ""))
    # the node path without task ids: a replayed step runs new task ids, the same nodes
    path = "|".join(part.split(":")[0] for part in ns.split("|"))
    ident = json.dumps(
        [path, tool, jsonable(list(args)), jsonable(kwargs)], sort_keys=True, default=str
    )
    return f"{tool[:200]}:{hashlib.sha256(ident.encode()).hexdigest()[:40]}"


def call_site(config: Any) -> dict[str, Any]:
    """Where the call runs: the super-step and the checkpoint the task started from. A replay
    from an earlier checkpoint (`tether runs resume --checkpoint`, or with `--update`) forks the
    thread and LangGraph numbers its steps one higher per fork; tether counts the forks along
    that checkpoint's parents, so the replayed step has the key of the step it replays."""
    conf = config.get("configurable", {})
    ns = str(conf.get("checkpoint_ns", ""))
    parent_ns = ns.rsplit("|", 1)[0] if "|" in ns else ""
    step = config.get("metadata", {}).get("langgraph_step")
    return {
        "step": step if isinstance(step, int) else None,
        "checkpoint_ns": parent_ns,
        "checkpoint_id": (conf.get("checkpoint_map") or {}).get(parent_ns),
    }


def idempotent(
    saver: TetherSaver, *, name: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Makes a side-effecting tool run at most once per graph step (its result must be JSON).

        @idempotent(saver)
        def send_email(to: str, body: str) -> str: ...

    Outside a graph (no LangGraph config) the tool runs as it is. An `async def` tool gets the
    same guarantee through the saver's async client.
    """

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        tool: str = name or str(getattr(fn, "__qualname__", "tool"))
        if inspect.iscoroutinefunction(fn):
            return _wrap_async(saver, fn, tool)  # type: ignore[return-value]

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                config = get_config()
            except RuntimeError:
                return fn(*args, **kwargs)
            thread_id = str(config["configurable"]["thread_id"])
            claim = saver.claim_tool_call(
                thread_id, call_key(config, tool, args, dict(kwargs)), tool, call_site(config)
            )
            key = claim["key"]
            if claim["status"] == "done":
                result: R = claim["result"]
                return result
            _in_doubt(claim, tool, key, thread_id)
            out = fn(*args, **kwargs)
            saver.complete_tool_call(thread_id, key, jsonable(out))
            return out

        return call

    return wrap


def _in_doubt(claim: dict[str, Any], tool: str, key: str, thread_id: str) -> None:
    if claim["status"] == "started":
        raise ConflictError(
            f"tool call {tool} ({key}) of thread {thread_id} started before and never "
            "reported back; it may have run: check its effect, then resume",
            code="tool_call_in_doubt",
        )


def _wrap_async(
    saver: TetherSaver, fn: Callable[..., Awaitable[Any]], tool: str
) -> Callable[..., Awaitable[Any]]:
    """`idempotent` for an `async def` tool, on the saver's async client."""

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            config = get_config()
        except RuntimeError:
            return await fn(*args, **kwargs)
        thread_id = str(config["configurable"]["thread_id"])
        claim = await saver.aclaim_tool_call(
            thread_id, call_key(config, tool, args, dict(kwargs)), tool, call_site(config)
        )
        key = claim["key"]
        if claim["status"] == "done":
            return claim["result"]
        _in_doubt(claim, tool, key, thread_id)
        out = await fn(*args, **kwargs)
        await saver.acomplete_tool_call(thread_id, key, jsonable(out))
        return out

    return call
