"""`tether.init()` and the SDK's one live configuration: its own TracerProvider (the global one is
left alone unless asked), the span exporter, the REST client, and flush/shutdown/stats."""

from __future__ import annotations

import atexit
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from tether._version import __version__
from tether.sdk._attribution import RunAttribution
from tether.sdk._exporter import CountingBatchSpanProcessor, Stats, TetherSpanExporter
from tether.sdk._http import Http

log = logging.getLogger("tether.sdk")

DEFAULT_URL = "http://127.0.0.1:7337"


@dataclass
class Sdk:
    """A configured SDK: where spans and REST calls go, and how they get there."""

    url: str
    api_key: str | None
    provider: TracerProvider
    http: Http
    stats: Stats = field(default_factory=Stats)
    processor: SpanProcessor | None = None
    options: tuple[Any, ...] = ()

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer("tether.sdk", __version__)

    def flush_spans(self, timeout_s: float = 10.0) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000))

    def close(self) -> None:
        self.http.drain(5.0)
        self.provider.shutdown()
        self.http.close()


_lock = threading.RLock()
_sdk: Sdk | None = None
_last_stats: Stats | None = None  # so counts survive shutdown()
_atexit_registered = False


def init(
    url: str | None = None,
    api_key: str | None = None,
    *,
    service_name: str | None = None,
    max_queue: int = 2048,
    export_timeout_s: float = 5.0,
    set_global: bool = False,
    schedule_delay_ms: float = 1000.0,
) -> None:
    """Points the SDK at a tether server. Idempotent: calling it again with the same arguments
    does nothing; with different ones it replaces the configuration (flushing the old one).

    `url` and `api_key` default to TETHER_URL / TETHER_API_KEY, then http://127.0.0.1:7337.
    Spans are batched in a bounded queue (`max_queue`) and exported on a background thread;
    when tether is down they are dropped and counted (`tether.sdk_stats()`), never raised.

        import tether
        tether.init("http://127.0.0.1:7337", api_key="tk_...")
    """
    global _sdk, _atexit_registered
    if max_queue < 1:
        raise ValueError("max_queue must be at least 1")
    url, api_key = _defaults(url, api_key)
    options = (url, api_key, service_name, max_queue, export_timeout_s, set_global)
    with _lock:
        if _sdk is not None and _sdk.options == options:
            return
        old = _sdk
        stats = Stats()
        attrs: dict[str, Any] = {"telemetry.sdk.name": "tether"}
        if service_name:
            attrs["service.name"] = service_name
        provider = new_provider(attrs)
        exporter = TetherSpanExporter(url, api_key=api_key, timeout_s=export_timeout_s, stats=stats)
        processor = CountingBatchSpanProcessor(
            exporter, stats, max_queue=max_queue, schedule_delay_ms=schedule_delay_ms
        )
        provider.add_span_processor(processor)
        if set_global:
            trace.set_tracer_provider(provider)
        _sdk = Sdk(url, api_key, provider, Http(url, api_key), stats, processor, options)
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
    if old is not None:
        # flushing may wait on a slow tether: never on the caller's thread
        threading.Thread(target=old.close, name="tether-sdk-close", daemon=True).start()


def new_provider(resource: dict[str, Any]) -> TracerProvider:
    """A TracerProvider of the SDK's own (never the global one), stamping run attribution."""
    provider = TracerProvider(resource=Resource.create(resource), shutdown_on_exit=False)
    provider.add_span_processor(RunAttribution())
    return provider


def _defaults(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    if url is None or api_key is None:
        try:
            from tether.config import load_settings

            settings = load_settings()
            url = url or settings.url
            api_key = api_key or settings.api_key
        except Exception:  # a broken tether.yaml must not stop an agent from starting
            log.warning("tether: could not read TETHER_URL/TETHER_API_KEY", exc_info=True)
    return (url or DEFAULT_URL).rstrip("/"), api_key


def active() -> Sdk:
    """The live SDK, configured from the environment on first use if `init()` was not called."""
    sdk = _sdk
    if sdk is None:
        with _lock:
            if _sdk is None:
                init()
            sdk = _sdk
    assert sdk is not None
    return sdk


def swap(sdk: Sdk | None) -> Sdk | None:
    """Installs `sdk` as the live SDK and returns the previous one (used by tether.testing)."""
    global _sdk
    with _lock:
        old, _sdk = _sdk, sdk
    return old


def flush(timeout_s: float = 10.0) -> bool:
    """Exports every finished span and runs queued feedback/score calls now. Returns False if
    that did not finish within `timeout_s`. Blocks the caller; call it before a short script exits.
    """
    sdk = _sdk
    if sdk is None:
        return True
    spans_ok = sdk.flush_spans(timeout_s)
    return sdk.http.drain(timeout_s) and spans_ok


def shutdown() -> None:
    """Flushes and stops the SDK (also run at interpreter exit). A later `init()` starts afresh."""
    global _sdk, _last_stats
    with _lock:
        sdk, _sdk = _sdk, None
    if sdk is not None:
        _last_stats = sdk.stats
        sdk.close()


def sdk_stats() -> dict[str, int]:
    """Spans `exported` to tether, spans `dropped` (queue full or tether unreachable) and
    `failed_exports` (export requests that failed).

        >>> tether.sdk_stats()
        {'exported': 12, 'dropped': 0, 'failed_exports': 0}
    """
    stats = _sdk.stats if _sdk is not None else _last_stats
    if stats is None:
        return {"exported": 0, "dropped": 0, "failed_exports": 0}
    return stats.snapshot()
