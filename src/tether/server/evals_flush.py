"""Waiting for the LLM gateway's queued spans of one run before its attempt is checked, so its
assertions see every call the gateway recorded (the writer batches spans for ~20 ms; a waiting
check cuts the batch short and is woken when the run's spans are in)."""

from __future__ import annotations

from tether.server.deps import State


async def flush_spans(state: State, run_id: str, timeout_s: float = 10.0) -> None:
    if state.llm_gateway is not None:
        await state.llm_gateway.writer.flush_run(run_id, timeout_s)
