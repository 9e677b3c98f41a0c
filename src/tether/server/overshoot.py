"""Overshoot events: an LLM call that settled above its hold (the provider billed more than
tether's worst case). Each one is audited (`budget.overshoot`), counted in the database (so every
worker and replica reports the same `tether_budget_overshoots_total`), and sent to the webhooks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import anyio
from sqlalchemy import Engine

from tether.core.money import nusd_to_float
from tether.gateway.llm.guard import Overshoot
from tether.server.deps import State
from tether.store import audit, budgets

log = logging.getLogger("tether.gateway")
# a meta counter row: spent_nusd sums the overshoots, calls counts them
COUNTER_SCOPE = "meta:overshoot"
EVENT = "budget.overshoot"


def _record(engine: Engine, event: Overshoot, now: datetime) -> None:
    data = event_data(event)
    with engine.begin() as conn:
        audit.append_in(conn, f"key:{event.key_id}", EVENT, event.run_id, data, now)
    extra_tokens = max(0, event.charged_tokens - event.held_tokens)
    budgets.add_spent_many(engine, [COUNTER_SCOPE], event.over_nusd, extra_tokens, 1, now=now)


def event_data(event: Overshoot) -> dict[str, Any]:
    return {
        "run_id": event.run_id, "agent": event.agent, "model": event.model,
        "scopes": list(event.scopes), "held_usd": nusd_to_float(event.held_nusd),
        "charged_usd": nusd_to_float(event.charged_nusd),
        "overshoot_usd": nusd_to_float(event.over_nusd), "held_tokens": event.held_tokens,
        "charged_tokens": event.charged_tokens,
    }  # fmt: skip


def handler(state: State) -> Callable[[Overshoot], Awaitable[None]]:
    """The gateway's `on_overshoot`: audit + counter in a thread, then the webhooks."""

    async def on_overshoot(event: Overshoot) -> None:
        try:
            await anyio.to_thread.run_sync(_record, state.engine, event, datetime.now(UTC))
        except Exception:  # after the response: the span still carries the overshoot
            log.exception("could not record the overshoot of run %s", event.run_id)
        text = (f"tether: a call of run {event.run_id} ({event.model}) cost "
                f"${nusd_to_float(event.charged_nusd):.6f}, "
                f"${nusd_to_float(event.over_nusd):.6f} above its hold")  # fmt: skip
        state.webhooks.notify(EVENT, event_data(event), text)

    return on_overshoot


def metric_lines(engine: Engine) -> list[str]:
    """The Prometheus families, from the database counter (blocking)."""
    snap = budgets.snapshot(engine, COUNTER_SCOPE)
    count, nusd = (snap[1].calls, snap[1].spent_nusd) if snap else (0, 0)
    return [
        "# HELP tether_budget_overshoots_total LLM calls that settled above their budget hold.",
        "# TYPE tether_budget_overshoots_total counter",
        f"tether_budget_overshoots_total {count}",
        "# HELP tether_budget_overshoot_usd_total USD charged above the holds of those calls.",
        "# TYPE tether_budget_overshoot_usd_total counter",
        f"tether_budget_overshoot_usd_total {nusd_to_float(nusd)}",
    ]
