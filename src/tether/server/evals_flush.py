"""Waiting for the LLM gateway's queued spans before an attempt is checked, so its assertions see
every call the gateway recorded (the writer batches spans for ~20 ms)."""

from __future__ import annotations

from typing import Any

from tether.server.deps import State


def _gateway(state: State) -> Any:
    # A typed field once State has one; the gateway registers itself under this name today.
    return getattr(state, "llm_gateway", None) or state.extras.get("llm_gateway")


async def flush_spans(state: State, timeout_s: float = 10.0) -> None:
    gateway = _gateway(state)
    if gateway is not None:
        await gateway.writer.flush(timeout_s)
