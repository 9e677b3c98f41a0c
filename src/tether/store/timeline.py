"""A run's LangGraph checkpoints as a timeline for people (API, CLI, console): per checkpoint
the node(s) that led to it, the step, the state, what changed against the previous checkpoint,
and the writes pending on it (interrupts among them). Built from the saver's JSON previews."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Engine, select

from tether.core.checkpoints import diff, node_of, shown
from tether.store.engine import reading
from tether.store.tables import checkpoint_blobs, checkpoint_threads, checkpoint_writes, checkpoints

MAX_CHECKPOINTS = 500


def timeline(engine: Engine, run_id: str, *, limit: int = MAX_CHECKPOINTS) -> list[dict[str, Any]]:
    """The run's checkpoints oldest first, each with node, step, state, diff and pending writes."""
    c, b, w = checkpoints.c, checkpoint_blobs.c, checkpoint_writes.c
    with reading(engine) as conn:
        thread_ids = list(
            conn.execute(
                select(checkpoint_threads.c.thread_id).where(checkpoint_threads.c.run_id == run_id)
            ).scalars()
        )
        rows = conn.execute(
            select(
                c.thread_id,
                c.checkpoint_ns,
                c.checkpoint_id,
                c.parent_id,
                c.step,
                c.source,
                c.versions,
                c.metadata,
                c.created_at,
            )
            .where(c.thread_id.in_(thread_ids))
            .order_by(c.checkpoint_id)
            .limit(limit)
        ).all()
        views: dict[tuple[str, str, str, str], Any] = {}
        for br in conn.execute(
            select(b.thread_id, b.checkpoint_ns, b.channel, b.version, b.view, b.type).where(
                b.thread_id.in_(thread_ids)
            )
        ):
            if br.type != "empty":
                views[(br.thread_id, br.checkpoint_ns, br.channel, br.version)] = br.view
        pending: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for wr in conn.execute(
            select(
                w.thread_id,
                w.checkpoint_ns,
                w.checkpoint_id,
                w.task_id,
                w.task_path,
                w.channel,
                w.view,
                w.idx,
            )
            .where(w.thread_id.in_(thread_ids))
            .order_by(w.task_path, w.task_id, w.idx)
        ):
            pending[(wr.thread_id, wr.checkpoint_ns, wr.checkpoint_id)].append(
                {
                    "task_id": wr.task_id,
                    "node": node_of(wr.task_path or ""),
                    "channel": wr.channel,
                    "value": wr.view,
                }
            )
    out: list[dict[str, Any]] = []
    states: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        state = {
            ch: views.get((r.thread_id, r.checkpoint_ns, ch, v))
            for ch, v in sorted((r.versions or {}).items())
            if shown(ch) and (r.thread_id, r.checkpoint_ns, ch, v) in views
        }
        key = (r.thread_id, r.checkpoint_ns, r.checkpoint_id)
        states[key] = state
        parent_key = (r.thread_id, r.checkpoint_ns, r.parent_id or "")
        led_here = pending.get(parent_key, [])
        nodes = sorted({p["node"] for p in led_here if p["node"] and p["node"] != "__start__"})
        writes = pending.get(key, [])
        out.append(
            {
                "thread_id": r.thread_id,
                "checkpoint_ns": r.checkpoint_ns,
                "checkpoint_id": r.checkpoint_id,
                "parent_id": r.parent_id,
                "step": r.step,
                "source": r.source,
                "nodes": nodes,
                "created_at": r.created_at.isoformat(),
                "state": state,
                "diff": diff(states.get(parent_key), state),
                "pending_writes": [p for p in writes if p["channel"] != "__interrupt__"],
                "interrupts": [p for p in writes if p["channel"] == "__interrupt__"],
                "metadata": r.metadata,
            }
        )
    return out
