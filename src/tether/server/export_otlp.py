"""OTLP/HTTP export of every run's spans (ingested and gateway-produced) to a collector, Tempo or
Datadog Agent: a background loop on one replica (the `export.otlp` lease) reads unsent spans
from the store past its high-water mark, sends them in protobuf batches with GenAI semantic
conventions and tether's attribution, and records them as sent. Ingest never waits on it;
a receiver that is down only grows the backlog in the store, retried with capped backoff."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
from fastapi import FastAPI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from tether._version import __version__
from tether.config import OtlpExportConfig
from tether.core.money import nusd_to_usd
from tether.server.deps import State
from tether.server.metrics import replica_identity
from tether.store import export, lease

log = logging.getLogger("tether.export")
LEASE = "export.otlp"
MARK = "otlp"
LEASE_TTL_S = 30.0
_OPERATION = {"llm": "chat", "embedding": "embeddings", "tool": "execute_tool",
              "agent": "invoke_agent"}  # fmt: skip


class ExportFailedError(Exception):
    """The receiver did not take a batch (down, refused, or answered an error)."""


def _value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, str):
        return AnyValue(string_value=v)
    return AnyValue(string_value=json.dumps(v, default=str))


def _attrs(values: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_value(v)) for k, v in values.items() if v is not None]


def _nanos(at: datetime | None) -> int:
    return 0 if at is None else int(at.timestamp() * 1_000_000) * 1000


def span_attributes(row: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """The stored attributes plus GenAI semantic conventions and tether's attribution."""
    out: dict[str, Any] = dict(row.get("attributes") or {})
    kind = row["kind"]
    if kind in _OPERATION:
        out.setdefault("gen_ai.operation.name", _OPERATION[kind])
    if row.get("model"):
        out["gen_ai.request.model"] = row["model"]
    if row.get("model_served"):
        out["gen_ai.response.model"] = row["model_served"]
    if row.get("input_tokens") is not None:
        out["gen_ai.usage.input_tokens"] = int(row["input_tokens"])
    if row.get("output_tokens") is not None:
        out["gen_ai.usage.output_tokens"] = int(row["output_tokens"])
    if kind == "tool":
        out.setdefault("gen_ai.tool.name", row["name"])
    if run.get("agent"):
        out["gen_ai.agent.name"] = run["agent"]
    out.update({
        "tether.run_id": row["run_id"], "tether.span_kind": kind, "tether.agent": run.get("agent"),
        "tether.agent_version": run.get("version"), "tether.task_id": run.get("task_id"),
        "tether.user": run.get("user"), "tether.input": row.get("input"),
        "tether.output": row.get("output"),
    })  # fmt: skip
    if row.get("cost_nusd") is not None:
        out["tether.cost_usd"] = float(nusd_to_usd(int(row["cost_nusd"])))
    if row.get("ttft_ms") is not None:
        out["tether.ttft_ms"] = float(row["ttft_ms"])
    return out


def encode(batch: export.Pending) -> bytes:
    """One ExportTraceServiceRequest, a resource per agent (service.name is the agent)."""
    by_agent: dict[str, list[Span]] = {}
    for row in batch.spans:
        run = batch.runs.get(row["run_id"], {})
        status = Status(code=Status.STATUS_CODE_ERROR, message=row.get("error") or "") \
            if row["status"] == "error" else Status(code=Status.STATUS_CODE_OK)  # fmt: skip
        span = Span(
            trace_id=bytes.fromhex(row["trace_id"]), span_id=bytes.fromhex(row["span_id"]),
            parent_span_id=bytes.fromhex(row["parent_id"]) if row.get("parent_id") else b"",
            name=row["name"], start_time_unix_nano=_nanos(row["started_at"]),
            end_time_unix_nano=_nanos(row["ended_at"] or row["started_at"]),
            kind=Span.SPAN_KIND_CLIENT if row["kind"] in ("llm", "embedding", "tool")
            else Span.SPAN_KIND_INTERNAL,
            attributes=_attrs(span_attributes(row, run)), status=status,
        )  # fmt: skip
        by_agent.setdefault(run.get("agent") or "", []).append(span)
    request = ExportTraceServiceRequest()
    for agent, spans in sorted(by_agent.items()):
        rs = ResourceSpans()
        rs.resource.attributes.extend(_attrs({"service.name": agent or "tether",
                                              "tether.agent": agent or None}))  # fmt: skip
        scope = rs.scope_spans.add()
        scope.scope.name, scope.scope.version = "tether", __version__
        scope.spans.extend(spans)
        request.resource_spans.append(rs)
    return request.SerializeToString()


class OtlpExporter:
    """One replica's export loop; `step()` is one batch (also what the tests drive)."""

    def __init__(self, state: State, config: OtlpExportConfig,
                 on_result: Callable[[int, bool], None] | None = None) -> None:  # fmt: skip
        assert config.endpoint
        self.engine = state.engine
        self.config = config
        self.replica = replica_identity(state.settings.replica_id)
        self.on_result = on_result
        self.client = httpx.Client(timeout=config.timeout_s)
        self.sent = 0

    def step(self) -> int:
        """Sends one batch if this replica holds the lease; the number of spans sent.
        Raises ExportFailedError when the receiver did not take it (nothing is marked)."""
        now = datetime.now(UTC)
        if not lease.acquire(self.engine, LEASE, self.replica, ttl_s=LEASE_TTL_S, now=now):
            return 0
        mark = export.read_mark(self.engine, MARK)
        batch = export.pending(self.engine, mark, now=now, limit=self.config.batch)
        if batch.spans:
            self._post(encode(batch), len(batch.spans))
            keys = [(r["trace_id"], r["span_id"]) for r in batch.spans]
            export.mark_sent(self.engine, keys, datetime.now(UTC))
            self.sent += len(keys)
            if self.on_result:
                self.on_result(len(keys), True)
        if batch.upto is not None:
            export.write_mark(self.engine, MARK, batch.upto)
        return len(batch.spans)

    def _post(self, body: bytes, n: int) -> None:
        headers = {"content-type": "application/x-protobuf", **self.config.headers}
        try:
            r = self.client.post(str(self.config.endpoint), content=body, headers=headers)
        except httpx.HTTPError as exc:
            self._failed(n)
            raise ExportFailedError(f"cannot reach {self.config.endpoint}: {exc}") from None
        if r.status_code >= 300:
            self._failed(n)
            raise ExportFailedError(f"{self.config.endpoint} answered HTTP {r.status_code}")

    def _failed(self, n: int) -> None:
        if self.on_result:
            self.on_result(n, False)

    async def run(self) -> None:
        backoff = 0.0
        while True:
            try:
                sent = await anyio.to_thread.run_sync(self.step)
                backoff = 0.0
                delay = 0.0 if sent >= self.config.batch else self.config.interval_s
            except ExportFailedError as exc:
                backoff = min(self.config.max_backoff_s, max(self.config.interval_s, backoff * 2))
                delay = backoff * random.uniform(0.8, 1.2)  # jitter: replicas do not beat in step
                log.warning("OTLP export failed (%s); retrying in %.1f s", exc, delay)
            except Exception:  # a background loop must outlive a database hiccup
                log.exception("OTLP export step failed; retrying")
                delay = self.config.max_backoff_s
            await anyio.sleep(delay)

    def close(self) -> None:
        self.client.close()
        try:
            lease.release(self.engine, LEASE, self.replica)
        except Exception:  # shutting down: the lease expires by itself
            log.warning("could not release the export lease", exc_info=True)


def install(app: FastAPI, state: State) -> None:
    """Starts the export loop when `otlp_export.endpoint` is set."""
    config = state.settings.otlp_export
    if not config.endpoint:
        return
    metrics = state.metrics
    exporter = OtlpExporter(state, config, metrics.observe_export if metrics else None)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(exporter.run)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        await anyio.to_thread.run_sync(exporter.close)

    state.lifespans.append(lifespan)
