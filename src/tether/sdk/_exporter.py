"""Ships finished spans to tether's `/v1/traces` as OTLP/HTTP protobuf without ever blocking or
raising into agent code: a bounded batch processor that counts what it drops, and an exporter that
backs off while tether is unreachable (dropping and counting instead of piling up)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

log = logging.getLogger("tether.sdk")

_MAX_BACKOFF_S = 30.0


class Stats:
    """Thread-safe counters of spans exported and dropped and of failed export requests, and
    of spans handed to the processor but not yet to the exporter (`outstanding`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.exported = 0
        self.dropped = 0
        self.failed_exports = 0
        self.outstanding = 0

    def admit(self, limit: int) -> bool:
        """Takes one place in the bounded queue, or counts the span dropped when it is full."""
        with self._lock:
            if self.outstanding >= limit:
                self.dropped += 1
                return False
            self.outstanding += 1
            return True

    def taken(self, n: int) -> None:
        with self._lock:
            self.outstanding = max(0, self.outstanding - n)

    def add(self, *, exported: int = 0, dropped: int = 0, failed_exports: int = 0) -> None:
        with self._lock:
            self.exported += exported
            self.dropped += dropped
            self.failed_exports += failed_exports

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "exported": self.exported,
                "dropped": self.dropped,
                "failed_exports": self.failed_exports,
            }


class TetherSpanExporter(SpanExporter):
    """POSTs batches to `{url}/v1/traces`. A failed batch is dropped and counted, and further
    batches are dropped without a request until an exponential back-off (1 s .. 30 s) elapses,
    so a dead tether costs the agent neither time nor memory."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None,
        timeout_s: float,
        stats: Stats,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Content-Type": "application/x-protobuf", "User-Agent": "tether-sdk"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._endpoint = url.rstrip("/") + "/v1/traces"
        self._client = httpx.Client(headers=headers, timeout=timeout_s, transport=transport)
        self._stats = stats
        self._retry_at = 0.0
        self._backoff_s = 0.0
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._stats.taken(len(spans))
        return self._send(spans)

    def _send(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        n = len(spans)
        if n == 0:
            return SpanExportResult.SUCCESS
        if self._closed or time.monotonic() < self._retry_at:
            self._stats.add(dropped=n)
            return SpanExportResult.FAILURE
        try:
            body = encode_spans(spans).SerializeToString()
            resp = self._client.post(self._endpoint, content=body)
        except Exception as exc:  # the SDK's guard: never let an export error reach the agent
            return self._failed(n, f"{type(exc).__name__}: {exc}", back_off=True)
        if resp.status_code < 300:
            if self._backoff_s:
                log.info("tether at %s is reachable again; exporting spans", self._endpoint)
            self._backoff_s = 0.0
            self._stats.add(exported=n)
            return SpanExportResult.SUCCESS
        if resp.status_code == 413 and n > 1:  # over tether's body limit: send halves
            first, second = self._send(spans[: n // 2]), self._send(spans[n // 2 :])
            ok = first is second is SpanExportResult.SUCCESS
            return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE
        # 400/413 are about this batch only; anything else (401, 404, 5xx) is about tether.
        back_off = resp.status_code not in (400, 413)
        return self._failed(n, f"HTTP {resp.status_code}: {resp.text[:200]}", back_off=back_off)

    def _failed(self, n: int, why: str, *, back_off: bool) -> SpanExportResult:
        self._stats.add(dropped=n, failed_exports=1)
        if back_off:
            first = self._backoff_s == 0.0
            self._backoff_s = min(_MAX_BACKOFF_S, max(1.0, self._backoff_s * 2))
            self._retry_at = time.monotonic() + self._backoff_s
            if first:
                log.warning(
                    "tether: could not export %d span(s) to %s (%s); dropping spans for %.0fs. "
                    "Is `tether serve` running? Counts: tether.sdk_stats()",
                    n,
                    self._endpoint,
                    why,
                    self._backoff_s,
                )
        else:
            log.warning("tether: %s rejected %d span(s): %s", self._endpoint, n, why)
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._closed = True
        self._client.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """OpenTelemetry's BatchSpanProcessor (background thread, batches) with the bound enforced
    here: a span that finds `max_queue` spans waiting is dropped and counted, so the queue never
    silently evicts and `tether.sdk_stats()` accounts for every span exactly."""

    def __init__(
        self,
        exporter: TetherSpanExporter,
        stats: Stats,
        *,
        max_queue: int,
        schedule_delay_ms: float,
    ) -> None:
        super().__init__(
            exporter,
            max_queue_size=max_queue,
            schedule_delay_millis=schedule_delay_ms,
            max_export_batch_size=min(512, max_queue),
        )
        self._stats = stats
        self._max_queue = max_queue
        self._closed = False

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context or not span.context.trace_flags.sampled:
            return
        if self._closed:
            self._stats.add(dropped=1)
            return
        if self._stats.admit(self._max_queue):
            super().on_end(span)

    def pending(self) -> int:
        """Spans waiting to be exported (never more than `max_queue`)."""
        return self._stats.outstanding

    def shutdown(self) -> None:
        self._closed = True
        super().shutdown()  # type: ignore[no-untyped-call]
