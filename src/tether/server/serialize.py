"""Store rows -> the JSON resources of the REST API (DESIGN.md), and their pydantic models for
OpenAPI. Money leaves as `cost_usd` numbers; timestamps as ISO 8601 UTC strings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from tether.core.errors import BadRequestError
from tether.core.money import nusd_to_float


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# ---------------------------------------------------------------- models (for OpenAPI)


class FeedbackComment(BaseModel):
    user: str | None
    comment: str
    created_at: str | None


class FeedbackSummary(BaseModel):
    thumbs_up: int = 0
    thumbs_down: int = 0
    comments: list[FeedbackComment] = Field(default_factory=list)


class Run(BaseModel):
    """One agent run: who ran it, how it went, what it cost."""

    id: str = Field(examples=["run_0af7651916cd43dd8448eb211c80319c"])
    task_id: str | None = Field(examples=["INV-1042"])
    agent: str | None = Field(examples=["invoice-triage"])
    version: str | None = Field(examples=["v3"])
    user: str | None = Field(examples=["alice"])
    status: str = Field(examples=["succeeded"])
    started_at: str
    ended_at: str | None
    duration_ms: float | None
    input: str | None
    output: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float = Field(examples=[0.0123])
    cost_unknown: bool
    llm_calls: int
    tool_calls: int
    span_count: int
    error: str | None
    kill_reason: str | None
    score: float | None
    feedback: FeedbackSummary
    trace_id: str | None
    source: str | None


class Span(BaseModel):
    """One step of a run: an LLM call, a tool call, a retrieval, the agent itself..."""

    trace_id: str
    span_id: str
    parent_id: str | None
    run_id: str
    kind: str = Field(examples=["llm"])
    name: str
    started_at: str
    ended_at: str | None
    latency_ms: float | None
    input: str | None
    output: str | None
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    status: str
    error: str | None
    attributes: dict[str, Any]


class SpanNode(Span):
    children: list[SpanNode] = Field(default_factory=list)


class RunDetail(Run):
    spans: list[SpanNode]


class RunPage(BaseModel):
    items: list[Run]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at end")


class SpanPage(BaseModel):
    items: list[Span]
    next_cursor: str | None


# ---------------------------------------------------------------- row -> resource


def run_resource(row: dict[str, Any]) -> dict[str, Any]:
    started, ended = row["started_at"], row.get("ended_at")
    summary = row.get("feedback") or {"thumbs_up": 0, "thumbs_down": 0, "comments": []}
    return {
        "id": row["id"],
        "task_id": row.get("task_id"),
        "agent": row.get("agent"),
        "version": row.get("version"),
        "user": row.get("user"),
        "status": row["status"],
        "started_at": _ts(started),
        "ended_at": _ts(ended),
        "duration_ms": (ended - started).total_seconds() * 1000 if ended else None,
        "input": row.get("input"),
        "output": row.get("output"),
        "input_tokens": int(row.get("input_tokens") or 0),
        "output_tokens": int(row.get("output_tokens") or 0),
        "cost_usd": nusd_to_float(int(row.get("cost_nusd") or 0)),
        "cost_unknown": bool(row.get("cost_unknown")),
        "llm_calls": int(row.get("llm_calls") or 0),
        "tool_calls": int(row.get("tool_calls") or 0),
        "span_count": int(row.get("span_count") or 0),
        "error": row.get("error"),
        "kill_reason": row.get("kill_reason"),
        "score": row.get("score"),
        "feedback": {
            "thumbs_up": summary["thumbs_up"],
            "thumbs_down": summary["thumbs_down"],
            "comments": [{**c, "created_at": _ts(c["created_at"])} for c in summary["comments"]],
        },
        "trace_id": row.get("trace_id"),
        "source": row.get("source"),
    }


def span_resource(row: dict[str, Any]) -> dict[str, Any]:
    out = {
        "trace_id": row["trace_id"],
        "span_id": row["span_id"],
        "parent_id": row.get("parent_id"),
        "run_id": row["run_id"],
        "kind": row["kind"],
        "name": row["name"],
        "started_at": _ts(row["started_at"]),
        "ended_at": _ts(row.get("ended_at")),
        "latency_ms": row.get("latency_ms"),
        "input": row.get("input"),
        "output": row.get("output"),
        "model": row.get("model"),
        "input_tokens": row.get("input_tokens"),
        "output_tokens": row.get("output_tokens"),
        "cost_usd": nusd_to_float(row.get("cost_nusd")),
        "status": row["status"],
        "error": row.get("error"),
        "attributes": row.get("attributes") or {},
    }
    if "children" in row:
        out["children"] = [span_resource(c) for c in row["children"]]
    return out


def run_detail(row: dict[str, Any], tree: list[dict[str, Any]]) -> dict[str, Any]:
    return {**run_resource(row), "spans": [span_resource(s) for s in tree]}


def page(items: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": next_cursor}


def agent_resource(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "cost_nusd"}
    out["cost_usd"] = nusd_to_float(int(row.get("cost_nusd") or 0))
    for key in ("created_at", "last_seen_at", "last_run_at"):
        if key in out:
            out[key] = _ts(out[key])
    if out.get("versions") and isinstance(out["versions"][0], dict):
        out["versions"] = [agent_resource(v) for v in out["versions"]]
    return out


def cost_row_resource(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "cost_nusd"}
    out["cost_usd"] = nusd_to_float(row["cost_nusd"])
    return out


def kpi_resource(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "target_cost_nusd"}
    out["target_cost_usd"] = nusd_to_float(row["target_cost_nusd"])
    return out


def feedback_resource(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "created_at": _ts(row["created_at"])}


def as_utc(value: datetime | None, name: str = "time") -> datetime | None:
    """Query timestamps without an offset are taken as UTC; one that has no UTC time (year 1
    with a positive offset, year 9999 with a negative one) is a 400 naming the parameter."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise BadRequestError(f"{name}: {value.isoformat()} is out of range in UTC") from None
