"""The background loop that applies each running rollout's rule on its schedule (the rule's
`interval_s`), so promotion and rollback happen without anyone watching."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import anyio

from tether.core.rollout_rule import parse_rule
from tether.server.deps import State
from tether.server.rollout_rule_apply import apply, event_body
from tether.store import rollouts

log = logging.getLogger("tether.rollouts")
TICK_S = 0.5


def due(state: State, now: datetime) -> list[str]:
    """Running rollouts whose last evaluation is older than their rule's interval."""
    out = []
    for ro in rollouts.list_rollouts(state.engine, active=True, limit=500):
        if ro["status"] != "running":
            continue
        interval = parse_rule(ro["rule_source"], ro["rule_file"] or "<rule>").interval_s
        last = ro["evaluated_at"] or ro["started_at"]
        if now - last >= timedelta(seconds=interval):
            out.append(ro["id"])
    return out


async def tick(state: State) -> int:
    """One pass: applies every due rule; returns how many rollouts changed state."""
    now = datetime.now(UTC)
    changed = 0
    for rollout_id in await anyio.to_thread.run_sync(due, state, now):
        try:
            ro, kind = await anyio.to_thread.run_sync(
                apply, state.engine, rollout_id, now, state.arms_cache
            )
        except Exception:  # one broken rollout must not stop the others being evaluated
            log.exception("could not apply the rule of rollout %s", rollout_id)
            continue
        if kind is not None:
            changed += 1
            if state.route_cache is not None:
                state.route_cache.forget(ro["agent"])
            event, text = event_body(ro, kind, "rollout-rule")
            state.webhooks.announce_event(event, text)
            log.info("%s", text)
    return changed


async def run(state: State) -> None:
    while True:
        try:
            await tick(state)
        except Exception:  # the database may be briefly unavailable; try again next tick
            log.exception("rollout loop pass failed")
        await anyio.sleep(TICK_S)


def lifespan(state: State) -> object:
    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, state)
            yield
            tg.cancel_scope.cancel()

    return running
