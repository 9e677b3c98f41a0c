"""The normalised span every source produces (OTLP, SDK, gateways) before it is stored."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

SpanKind = Literal["agent", "llm", "tool", "retrieval", "embedding", "approval", "chain", "other"]
SpanStatus = Literal["ok", "error", "unset"]
RunStatus = Literal["running", "succeeded", "failed", "killed", "awaiting_approval"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "killed"})

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


def run_id_for_trace(trace_id: str) -> str:
    """A trace's root agent span is a run; its id is derived from the trace id."""
    return f"run_{trace_id}"


def valid_run_id(value: str) -> bool:
    return bool(_RUN_ID_RE.match(value))


@dataclass(frozen=True)
class RunAttribution:
    """Who a run belongs to; any field may be unknown."""

    agent: str | None = None
    version: str | None = None
    task_id: str | None = None
    user: str | None = None


@dataclass(frozen=True)
class SpanRecord:
    """One span, whatever it came from. `is_root` marks the span that is the run itself."""

    trace_id: str
    span_id: str
    run_id: str
    kind: SpanKind | str
    name: str
    started_at: datetime
    ended_at: datetime | None = None
    parent_id: str | None = None
    is_root: bool = False
    input: str | None = None
    output: str | None = None
    model: str | None = None
    model_served: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    cost_nusd: int | None = None
    cost_unknown: bool = False
    ttft_ms: float | None = None
    status: SpanStatus | str = "unset"
    error: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    attribution: RunAttribution = field(default_factory=RunAttribution)

    @property
    def latency_ms(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds() * 1000.0


_SPAN_FIELDS = frozenset(f.name for f in fields(SpanRecord))
_new = object.__new__
_set = object.__setattr__


def span_record(**values: Any) -> SpanRecord:
    """`SpanRecord(**values)` for a caller that names every field (OTLP ingest maps 20,000 spans a
    second): a frozen dataclass's __init__ sets its 23 fields with one object.__setattr__ call
    each, most of the cost of mapping a span; this sets the instance's __dict__ at once. The same
    object (equality, repr, replace), made in a tenth of the instructions."""
    if values.keys() != _SPAN_FIELDS:
        raise TypeError(f"span_record needs exactly the fields {sorted(_SPAN_FIELDS)}")
    rec = _new(SpanRecord)
    _set(rec, "__dict__", values)
    return rec
