"""`GET /metrics` through prometheus_client: the store-derived families (one exporting replica,
see metrics_ledger.py) and what this replica measured itself (gateway latency and time to first
token, spans and bytes ingested).

Measured families are per replica, so summing them over replicas is right. Under
`tether serve --workers N` they live in prometheus_client's multiprocess files
(`TETHER_METRICS_DIR`, set by `serve`), so whichever worker answers a scrape reports the
whole replica.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine

from tether.config import Settings
from tether.core.records import SpanRecord
from tether.server.metrics_ledger import LedgerCollector

log = logging.getLogger("tether.metrics")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def replica_identity(configured: str | None) -> str:
    """This replica's name in the metrics lease: the setting, else host name and process."""
    return configured or f"{socket.gethostname()}:{os.getpid()}"


class Metrics:
    """One app's registry: the ledger collector plus the families this replica measures."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.multiprocess_dir: Path | None = settings.metrics_dir
        self.registry = CollectorRegistry(auto_describe=False)
        # in multiprocess mode the values live in files, read back by MultiProcessCollector
        own = None if self.multiprocess_dir else self.registry
        self.gateway_latency = Histogram(
            "tether_gateway_request_duration_seconds",
            "LLM gateway calls from arrival to the last byte, by API, model and outcome.",
            ["api", "model", "outcome"], buckets=LATENCY_BUCKETS, registry=own,
        )  # fmt: skip
        self.gateway_ttft = Histogram(
            "tether_gateway_ttft_seconds", "LLM gateway time to the first token, by model.",
            ["model"], buckets=TTFT_BUCKETS, registry=own,
        )  # fmt: skip
        self.spans_ingested = Counter(
            "tether_spans_ingested", "Spans this replica stored (acknowledged), by source.",
            ["source"], registry=own,
        )  # fmt: skip
        self.export_spans = Counter(
            "tether_otlp_export_spans", "Spans this replica sent over OTLP, by outcome "
            "(`sent`; `failed` counts attempts the receiver did not take).", ["outcome"],
            registry=own,
        )  # fmt: skip
        self.ingest_bytes = Counter(
            "tether_ingest_bytes",
            "Request bytes of OTLP exports this replica acknowledged.",
            registry=own,
        )
        if self.multiprocess_dir is not None:
            MultiProcessCollector(self.registry, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        self.ledger = LedgerCollector(
            engine, replica_identity(settings.replica_id), cache_s=settings.metrics_cache_s
        )
        self.registry.register(self.ledger)

    def observe_gateway(self, batch: list[SpanRecord]) -> None:
        """Called with each batch of gateway spans once it is stored."""
        for rec in batch:
            if rec.kind not in ("llm", "embedding"):
                continue
            attrs = rec.attributes or {}
            model = rec.model or ""
            if rec.ended_at is not None:
                secs = max(0.0, (rec.ended_at - rec.started_at).total_seconds())
                self.gateway_latency.labels(
                    str(attrs.get("gen_ai.system", "")), model, str(attrs.get("tether.outcome", ""))
                ).observe(secs)
            if rec.ttft_ms is not None:
                self.gateway_ttft.labels(model).observe(rec.ttft_ms / 1000.0)
        self.spans_ingested.labels("gateway").inc(len(batch))

    def observe_ingest(self, spans: int, body_bytes: int, source: str = "otlp") -> None:
        self.spans_ingested.labels(source).inc(spans)
        self.ingest_bytes.inc(body_bytes)

    def observe_export(self, spans: int, ok: bool) -> None:
        self.export_spans.labels("sent" if ok else "failed").inc(spans)

    def render(self) -> bytes:
        return _generate_latest(self.registry)
