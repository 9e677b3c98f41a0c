"""OTLP ingest answers only after its spans are committed: a `tether serve` killed with SIGKILL
under load (batches of 300 spans: SQLite stores them as statements of 256, 32, 8 and 4 rows)
has stored every span it acknowledged, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from sqlalchemy import select

from tests.conftest import ServerProcess
from tether.store.engine import make_engine, reading
from tether.store.tables import spans

TRACES_PER_BATCH = 100  # x 3 spans


def _batch() -> tuple[bytes, set[tuple[str, str]]]:
    req, keys = ExportTraceServiceRequest(), set()
    t0 = time.time_ns()
    for _ in range(TRACES_PER_BATCH):
        trace, root = secrets.token_bytes(16), secrets.token_bytes(8)
        trace_spans = [Span(trace_id=trace, span_id=root, name="invoke_agent a",
                            start_time_unix_nano=t0, end_time_unix_nano=t0 + 10**9,
                            status=Status(code=1))]  # fmt: skip
        for kind in ("LLM", "TOOL"):
            trace_spans.append(Span(
                trace_id=trace, span_id=secrets.token_bytes(8), parent_span_id=root,
                name=kind.lower(), start_time_unix_nano=t0, end_time_unix_nano=t0 + 10**8,
                attributes=[KeyValue(key="openinference.span.kind",
                                     value=AnyValue(string_value=kind)),
                            KeyValue(key="input.value", value=AnyValue(string_value="q " * 200))],
            ))  # fmt: skip
        keys |= {(s.trace_id.hex(), s.span_id.hex()) for s in trace_spans}
        req.resource_spans.append(ResourceSpans(
            resource={"attributes": [KeyValue(key="service.name",
                                              value=AnyValue(string_value="a"))]},
            scope_spans=[ScopeSpans(spans=trace_spans)]))  # fmt: skip
    return req.SerializeToString(), keys


def test_a_sigkilled_server_has_stored_every_span_it_acknowledged(
    tmp_path: Path, db_url: str
) -> None:
    server = ServerProcess(tmp_path / "home", db_url)
    acked: list[set[tuple[str, str]]] = []
    stop = threading.Event()

    def exporter() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                body, keys = _batch()
                try:
                    r = client.post(f"{server.url}/v1/traces", content=body,
                                    headers={"content-type": "application/x-protobuf"})  # fmt: skip
                except httpx.HTTPError:
                    continue  # never answered: not acknowledged
                if r.status_code == 200:
                    acked.append(keys)

    threads = [threading.Thread(target=exporter) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while len(acked) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(server.proc.pid, signal.SIGKILL)  # mid-load: no shutdown, no final commit
        server.proc.wait(30)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        server.stop()
    assert len(acked) >= 12, "the server acknowledged too few exports before the kill"
    wanted = set().union(*acked)
    engine = make_engine(db_url)
    try:
        with reading(engine) as conn:
            rows = conn.execute(select(spans.c.trace_id, spans.c.span_id)).all()
            stored = {(r[0], r[1]) for r in rows}
    finally:
        engine.dispose()
    assert not wanted - stored, f"{len(wanted - stored)} acknowledged spans lost"
