"""What an agent's recorded runs show, for `tether policy suggest`: the tools it called (from
its tool spans) and its task inputs (where the counterparties it was asked to use appear)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, func, select

from tether.core.suggest import ToolInfo, Usage
from tether.store import tools as registry
from tether.store.engine import reading
from tether.store.tables import runs, spans

MAX_RUNS = 1000
MAX_SPANS = 20_000


def agent_usage(engine: Engine, agent: str, *, max_runs: int = MAX_RUNS) -> Usage:
    """The agent's newest `max_runs` runs: tool-call counts by tool and their task inputs.
    A call refused by the policy still counts as a use (the agent wanted that tool)."""
    recent = (
        select(runs.c.id, runs.c.input)
        .where(runs.c.agent == agent)
        .order_by(runs.c.started_at.desc())
        .limit(max_runs)
        .subquery()
    )
    tool_spans = spans.c.kind == "tool", spans.c.run_id.in_(select(recent.c.id))
    with reading(engine) as conn:
        rows = conn.execute(select(recent.c.id, recent.c.input)).all()
        counts = conn.execute(
            select(spans.c.name, func.count()).where(*tool_spans).group_by(spans.c.name)
        ).all()
        per_run = (
            conn.execute(select(func.count()).where(*tool_spans).group_by(spans.c.run_id))
            .scalars()
            .all()
        )
        inputs = conn.execute(
            select(spans.c.name, spans.c.input).where(*tool_spans).limit(MAX_SPANS)
        ).all()
    return Usage(
        runs=len(rows),
        tools={str(name): int(n) for name, n in counts},
        task_inputs=[r.input for r in rows if r.input],
        max_numbers=_numeric_maxima(list(inputs)),
        max_tool_calls=max(per_run, default=0),
    )


def _numeric_maxima(rows: list[Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, raw in rows:
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            continue
        if not isinstance(args, dict):
            continue
        for key, value in args.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                seen = out.setdefault(str(name), {})
                seen[str(key)] = max(seen.get(str(key), float(value)), float(value))
    return out


def registry_tools(engine: Engine) -> list[ToolInfo]:
    return [ToolInfo(t.name, frozenset(t.tags), t.input_schema)
            for t in registry.list_tools(engine)]  # fmt: skip
