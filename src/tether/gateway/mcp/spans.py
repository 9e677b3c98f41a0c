"""Which run an MCP request belongs to, and the tool / approval spans the gateway writes into it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from tether.core.ids import make_id
from tether.core.records import RunAttribution, SpanRecord, valid_run_id
from tether.core.semtext import clean_attributes, redact_text
from tether.store.engine import reading
from tether.store.ingest import write_spans
from tether.store.tables import runs

# The ASGI scope key under which /mcp hands the request's Principal to the gateway.
PRINCIPAL_KEY = "tether.principal"


@dataclass(frozen=True)
class CallContext:
    """Who is calling and in which run: from the key and the X-Tether-* headers."""

    agent: str | None
    actor: str
    run_id: str
    attribution: RunAttribution


def run_for_request(headers: Mapping[str, str], agent: str | None) -> tuple[str, RunAttribution]:
    """X-Tether-Run-Id names the run; else the MCP session is the run; else each call is one."""
    run_id = headers.get("x-tether-run-id")
    if run_id and not valid_run_id(run_id):
        run_id = None
    if not run_id:
        session = headers.get("mcp-session-id")
        if session:
            run_id = "run_mcp_" + hashlib.sha256(session.encode()).hexdigest()[:24]
        else:
            run_id = make_id("run", os.urandom(12))
    return run_id, RunAttribution(
        agent=agent, task_id=headers.get("x-tether-task-id"), user=headers.get("x-tether-user")
    )


def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


def redacted(value: Any, redact: tuple[str, ...]) -> Any:
    """`value` (JSON data) with secret-named entries (settings.redact_fields) replaced."""
    text = redact_text(as_json(value), redact)
    try:
        return json.loads(text) if text else value
    except ValueError:  # cut short by the size limit: keep the (redacted) text
        return text


def _trace_id(engine: Engine, run_id: str) -> str:
    with reading(engine) as conn:
        found = conn.execute(select(runs.c.trace_id).where(runs.c.id == run_id)).scalar()
    return found or hashlib.sha256(run_id.encode()).hexdigest()[:32]


def record_span(
    engine: Engine,
    call: CallContext,
    *,
    kind: str,
    name: str,
    started_at: datetime,
    ended_at: datetime,
    input: Any,
    output: str | None,
    error: str | None,
    attributes: dict[str, Any],
    now: datetime,
    redact: tuple[str, ...] = (),
) -> None:
    """Writes one span (kind `tool` or `approval`) into the call's run, secrets redacted."""
    record = SpanRecord(
        trace_id=_trace_id(engine, call.run_id),
        span_id=os.urandom(8).hex(),
        run_id=call.run_id,
        kind=kind,
        name=name,
        started_at=started_at,
        ended_at=ended_at,
        input=redact_text(as_json(input), redact),
        output=redact_text(output, redact),
        status="error" if error else "ok",
        error=redact_text(error, redact),
        attributes=clean_attributes(attributes, redact),
        attribution=call.attribution,
    )
    write_spans(engine, [record], now=now, source="gateway")
