"""Waiting for the LLM gateway's queued spans before an attempt is checked, so its assertions see
every call the gateway recorded (the writer batches spans for ~20 ms)."""

from __future__ import annotations

from tether.server.deps import State


async def flush_spans(state: State, timeout_s: float = 10.0) -> None:
    if state.llm_gateway is not None:
        await state.llm_gateway.writer.flush(timeout_s)
