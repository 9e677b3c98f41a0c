"""`GET /metrics` in the Prometheus text format: runs, tokens and cost per agent (one aggregate
over the runs table, cached briefly) and the spans this process ingested."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from sqlalchemy import Engine, func, select

from tether.core.money import nusd_to_usd
from tether.server import overshoot
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.store.costs import grouped
from tether.store.engine import reading
from tether.store.tables import runs

router = APIRouter()
CACHE_TTL_S = 10.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _line(name: str, labels: dict[str, str], value: float | int) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {value}" if inner else f"{name} {value}"


def _family(name: str, kind: str, help_: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *samples]


def run_aggregates(engine: Engine) -> list[dict[str, Any]]:
    """Per (agent, status): runs, input and output tokens, cost in nano-dollars."""
    r = runs.c
    with reading(engine) as conn:
        agent, status = grouped(conn, r.agent), grouped(conn, r.status)
        q = select(
            agent.label("agent"), status.label("status"), func.count().label("runs"),
            func.coalesce(func.sum(r.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(r.output_tokens), 0).label("output_tokens"),
            func.coalesce(func.sum(r.cost_nusd), 0).label("cost_nusd"),
        ).group_by(agent, status).order_by(agent, status)  # fmt: skip
        return [dict(row._mapping) for row in conn.execute(q)]


def render(rows: list[dict[str, Any]], spans_ingested: int) -> str:
    """The exposition text for `rows` from `run_aggregates`."""
    tokens: dict[str, list[int]] = {}
    cost: dict[str, int] = {}
    run_lines = []
    for row in rows:
        agent = row["agent"] or ""
        run_lines.append(_line("tether_runs_total", {"agent": agent, "status": row["status"]},
                               int(row["runs"])))  # fmt: skip
        t = tokens.setdefault(agent, [0, 0])
        t[0] += int(row["input_tokens"])
        t[1] += int(row["output_tokens"])
        cost[agent] = cost.get(agent, 0) + int(row["cost_nusd"])
    token_lines = [
        _line("tether_tokens_total", {"agent": a, "direction": d}, n)
        for a, (i, o) in sorted(tokens.items()) for d, n in (("input", i), ("output", o))
    ]  # fmt: skip
    cost_lines = [
        _line("tether_cost_usd_total", {"agent": a}, float(nusd_to_usd(n)))
        for a, n in sorted(cost.items())
    ]
    out = [
        *_family("tether_runs_total", "gauge",
                 "Runs stored, by agent and current status.", run_lines),
        *_family("tether_spans_ingested_total", "counter",
                 "Spans ingested by this server process since it started.",
                 [_line("tether_spans_ingested_total", {}, spans_ingested)]),
        *_family("tether_tokens_total", "counter",
                 "LLM tokens used by stored runs, by agent and direction.", token_lines),
        *_family("tether_cost_usd_total", "counter",
                 "USD spent by stored runs, by agent.", cost_lines),
    ]  # fmt: skip
    return "\n".join(out) + "\n"


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics",
    description="Needs a key with the read scope: Prometheus `authorization: {credentials: KEY}`.",
    tags=["metrics"],
)
async def metrics(
    state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> PlainTextResponse:
    cache = state.metrics_cache
    now = time.monotonic()
    if cache.get("at") is None or now - cache["at"] > CACHE_TTL_S:
        cache["rows"] = await run_in_threadpool(run_aggregates, state.engine)
        cache["overshoot"] = await run_in_threadpool(overshoot.metric_lines, state.engine)
        cache["at"] = now
    spans = state.spans_ingested
    text = render(cache["rows"], spans) + "\n".join(cache["overshoot"]) + "\n"
    text += await run_in_threadpool(redteam_age_text, state.engine)
    return PlainTextResponse(text, media_type=CONTENT_TYPE)


def redteam_age_text(engine: Engine) -> str:
    """tether_redteam_age_seconds{agent}: since each agent's last stored red-team report."""
    from datetime import UTC, datetime

    from tether.store.redteam import last_run_at

    now = datetime.now(UTC)
    lines = [_line("tether_redteam_age_seconds", {"agent": a}, round((now - at).total_seconds()))
             for a, at in sorted(last_run_at(engine).items())]  # fmt: skip
    return (
        "\n".join(
            _family(
                "tether_redteam_age_seconds",
                "gauge",
                "Seconds since the agent's last red-team report (alert past 90 days).",
                lines,
            )
        )
        + "\n"
    )
