"""OTLP/HTTP trace ingest: `POST /v1/traces` (protobuf or JSON, optionally gzip) -> spans and runs.

A request is answered only after its spans are committed, all or nothing: on SQLite in a
savepoint of a group commit with the requests decoded beside it, on PostgreSQL in a transaction
of its own.
With no API key at all and a loopback bind, ingest is open (a fresh local install, `tether demo`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import anyio
from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import Connection, select

from tether.core.errors import PermissionDeniedError
from tether.core.pricing import PriceTable, load_price_table
from tether.core.records import SpanRecord
from tether.core.semconv import MapOptions, map_spans
from tether.server import group_commit
from tether.server import otlp_decode as decode
from tether.server.auth import Principal, authenticate, bearer_secret, is_loopback
from tether.server.deps import State, get_state
from tether.store import keys as key_store
from tether.store.engine import reading
from tether.store.ingest import write_spans, write_spans_in
from tether.store.tables import runs

router = APIRouter()

_OPEN_CHECK_TTL_S = 5.0
# Export requests a process reads and decodes at once; the others wait unread (TCP holds their
# bodies back). On PostgreSQL two keep the pipeline full (one maps in Python while the other's
# write runs without the GIL); more only add decoded batches to memory (RSS).
INGEST_SLOTS = 2
# On SQLite one decodes while the decoded ones wait together for the next group commit
# (server.group_commit): requests held at once, decoded or waiting for their write. A second
# decoding thread only takes the GIL from the writer (whose SQLite calls each let it go and
# take it back); more held requests only add memory. The writer's transaction holds at most
# INGEST_IN_FLIGHT - 1 batches.
SQLITE_DECODE_SLOTS = 1
INGEST_IN_FLIGHT = 3
ANONYMOUS = Principal(key_id="anonymous", scopes=frozenset({"ingest"}), agent=None)


def _ingest_is_open(state: State) -> bool:
    """True while no API key exists and the server binds loopback only (checked every 5 s)."""
    if not is_loopback(state.settings.host):
        return False
    now = time.monotonic()
    cached = state.ingest_open
    if cached is not None and now - cached[0] < _OPEN_CHECK_TTL_S:
        return bool(cached[1])
    is_open = key_store.count_live_keys(state.engine) == 0
    state.ingest_open = (now, is_open)
    return is_open


def require_ingest(request: Request, state: State = Depends(get_state)) -> Principal:
    """The `ingest` scope (admin holds it too); no key needed while ingest is open."""
    if _ingest_is_open(state):
        return ANONYMOUS
    principal = authenticate(state, bearer_secret(request))
    if not principal.has("ingest"):
        raise PermissionDeniedError(
            "this key lacks the ingest scope needed for /v1/traces; create one with "
            "`tether keys create --scopes ingest`"
        )
    return principal


def price_table(state: State) -> PriceTable:
    """The bundled prices with tether.yaml `pricing:` overrides, built once per app."""
    if state.price_table is None:
        state.price_table = load_price_table(state.settings.pricing)
    return state.price_table


def count_ingested(state: State, n: int, body_bytes: int) -> None:
    if state.metrics is not None:
        state.metrics.observe_ingest(n, body_bytes)


def ingest_payload(
    state: State,
    body: bytes,
    content_type: str | None,
    content_encoding: str | None,
    agent: str | None = None,
) -> tuple[int, str]:
    """Decodes, maps and stores one export request; returns (spans stored, media kind)."""
    records, kind = decode_payload(state, body, content_type, content_encoding, agent)
    result = write_spans(state.engine, records, now=datetime.now(UTC), source="otlp")
    return result.spans, kind


def decode_payload(
    state: State,
    body: bytes,
    content_type: str | None,
    content_encoding: str | None,
    agent: str | None = None,
) -> tuple[list[SpanRecord], str]:
    """Decodes and maps one export request; returns (its span records, media kind).

    `agent`: the agent an agent-bound key speaks for. Its spans are attributed to that agent
    whatever they say, and a batch touching another agent's run is refused whole (403).
    """
    kind = decode.media_type(content_type)
    raw = decode.decompress(body, content_encoding, state.settings.max_request_bytes)
    spans = decode.to_spans(decode.parse_request(raw, kind))
    opts = MapOptions(price_table(state), tuple(f.lower() for f in state.settings.redact_fields))
    records = map_spans(spans, opts)
    if agent is not None:
        records = _as_agent(state, records, agent)
    return records, kind


def _write_in(records: list[SpanRecord]) -> Callable[[Connection], int]:
    def write(conn: Connection) -> int:
        if records:
            write_spans_in(conn, records, now=datetime.now(UTC), source="otlp")
        return len(records)

    return write


def _as_agent(state: State, records: list[SpanRecord], agent: str) -> list[SpanRecord]:
    run_ids = sorted({r.run_id for r in records})
    with reading(state.engine) as conn:
        owners = conn.execute(select(runs.c.id, runs.c.agent).where(runs.c.id.in_(run_ids))).all()
    foreign = [rid for rid, owner in owners if owner is not None and owner != agent]
    if foreign:
        raise PermissionDeniedError(
            f"this key speaks for agent {agent}; run {foreign[0]} belongs to another agent",
            code="wrong_agent",
        )
    return [replace(r, attribution=replace(r.attribution, agent=agent)) for r in records]


@router.post(
    "/v1/traces",
    tags=["otlp"],
    summary="OTLP/HTTP trace export (protobuf or JSON, gzip allowed)",
    response_class=Response,
)
async def export_traces(
    request: Request,
    state: State = Depends(get_state),
    principal: Principal = Depends(require_ingest),
) -> Response:
    if state.ingest_slots is None:
        sqlite = state.engine.dialect.name == "sqlite"
        state.ingest_slots = anyio.CapacityLimiter(SQLITE_DECODE_SLOTS if sqlite else INGEST_SLOTS)
        state.ingest_in_flight = anyio.CapacityLimiter(INGEST_IN_FLIGHT)
    headers = request.headers
    ctype, cenc = headers.get("content-type"), headers.get("content-encoding")
    agent = None if principal.has("admin") else principal.agent
    if state.engine.dialect.name != "sqlite" or state.ingest_in_flight is None:
        async with state.ingest_slots:
            body = await request.body()
            n, kind = await anyio.to_thread.run_sync(
                ingest_payload, state, body, ctype, cenc, agent
            )
    else:
        async with state.ingest_in_flight:
            async with state.ingest_slots:
                body = await request.body()
                records, kind = await anyio.to_thread.run_sync(
                    decode_payload, state, body, ctype, cenc, agent
                )
            # no savepoints: span writes are idempotent, a failed group is written again one by one
            spans_queue = group_commit.queue(
                state.engine, "spans", INGEST_IN_FLIGHT, savepoints=False
            )
            n = await spans_queue.write(_write_in(records))
    count_ingested(state, n, len(body))
    payload, media = decode.response_body(kind)
    return Response(content=payload, media_type=media)
