"""Synthetic agent traffic as span records, with timestamps of its own: weeks of history for
the drift and cost-alert demo, the drift benchmark and the watch tests (the live demo agents
only make minutes of it)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from tether.core.records import RunAttribution, SpanRecord, run_id_for_trace


@dataclass(frozen=True)
class Behaviour:
    """How one agent version behaves: tool paths (with weights), success rate, cost per LLM
    call (nano-dollars), the model the provider serves."""

    paths: Sequence[tuple[tuple[str, ...], float]]
    success: float = 0.9
    call_nusd: int = 2_000_000
    model: str = "gpt-4o-mini-2024-07-18"


SUPPORT_V1 = Behaviour(
    paths=[
        (("crm.lookup_customer", "kb.search", "helpdesk.reply"), 0.6),
        (("crm.lookup_customer", "helpdesk.reply"), 0.3),
        (("kb.search", "helpdesk.reply"), 0.1),
    ]
)
# v2 searches before it looks the customer up, and refunds without asking: a drift
SUPPORT_V2 = Behaviour(
    paths=[
        (("kb.search", "crm.lookup_customer", "helpdesk.reply"), 0.5),
        (("crm.lookup_customer", "billing.refund", "helpdesk.reply"), 0.3),
        (("crm.lookup_customer", "helpdesk.reply"), 0.2),
    ],
    success=0.7,
    call_nusd=3_000_000,
)


def trace_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def run_spans(
    rng: random.Random,
    started_at: datetime,
    *,
    agent: str,
    version: str,
    user: str,
    behaviour: Behaviour,
    task_type: str | None = None,
    cost_factor: float = 1.0,
) -> list[SpanRecord]:
    """One run: a root agent span, an LLM call before each tool call and one to answer."""
    tid = trace_id(rng)
    run_id = run_id_for_trace(tid)
    root_id = f"{rng.getrandbits(64):016x}"
    tools = rng.choices([p for p, _ in behaviour.paths], [w for _, w in behaviour.paths])[0]
    ok = rng.random() < behaviour.success
    at = started_at
    children: list[SpanRecord] = []
    for i, name in enumerate((*tools, None)):
        llm_ms = rng.uniform(300, 1200)
        cost = int(behaviour.call_nusd * cost_factor * rng.uniform(0.6, 1.4))
        children.append(SpanRecord(
            trace_id=tid, span_id=f"{rng.getrandbits(64):016x}", parent_id=root_id,
            run_id=run_id, kind="llm", name=f"chat {behaviour.model}", started_at=at,
            ended_at=at + timedelta(milliseconds=llm_ms), model="gpt-4o-mini",
            model_served=behaviour.model, input_tokens=400 + 50 * i, output_tokens=80,
            cost_nusd=cost, status="ok",
        ))  # fmt: skip
        at += timedelta(milliseconds=llm_ms)
        if name is not None:
            tool_ms = rng.uniform(50, 300)
            children.append(SpanRecord(
                trace_id=tid, span_id=f"{rng.getrandbits(64):016x}", parent_id=root_id,
                run_id=run_id, kind="tool", name=name, started_at=at,
                ended_at=at + timedelta(milliseconds=tool_ms), status="ok",
            ))  # fmt: skip
            at += timedelta(milliseconds=tool_ms)
    attrs = {"tether.task_type": task_type} if task_type else {}
    root = SpanRecord(
        trace_id=tid, span_id=root_id, run_id=run_id, kind="agent", name=agent,
        started_at=started_at, ended_at=at, is_root=True, status="ok" if ok else "error",
        error=None if ok else "the customer's question went unanswered", attributes=attrs,
        attribution=RunAttribution(agent=agent, version=version, task_id=f"T-{tid[:8]}",
                                   user=user),
    )  # fmt: skip
    return [root, *children]


def steady_runs(
    rng: random.Random,
    start: datetime,
    end: datetime,
    *,
    runs_per_hour: float,
    agent: str,
    version: str,
    users: Sequence[str],
    behaviour: Behaviour,
) -> Iterator[list[SpanRecord]]:
    """Runs spread over [start, end): fewer at night and at weekends, like office traffic."""
    at = start
    while at < end:
        hour = at.hour
        weight = (0.3 if hour < 7 or hour > 19 else 1.0) * (0.5 if at.weekday() >= 5 else 1.0)
        n = int(runs_per_hour * weight + rng.random())
        for _ in range(n):
            begin = at + timedelta(seconds=rng.uniform(0, 3500))
            yield run_spans(rng, begin, agent=agent, version=version, user=rng.choice(users),
                            behaviour=behaviour)  # fmt: skip
        at += timedelta(hours=1)
