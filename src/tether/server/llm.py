"""Installs the LLM gateway: the /llm routes, POST /api/v1/runs/{id}/kill, and the background
loops (span writer, kill switch poll, expired-reservation sweep, Vault key refresh)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
from fastapi import APIRouter, Body, Depends, FastAPI
from pydantic import BaseModel, Field
from sqlalchemy import select

from tether.core.errors import ConflictError
from tether.gateway.llm.forward import Upstream
from tether.gateway.llm.gateway import Gateway
from tether.gateway.llm.killswitch import KillSwitch, kill_run
from tether.gateway.llm.routes import FastPath, LLMRoutes
from tether.server import auth, overshoot
from tether.server.auth import Principal, require
from tether.server.deps import State
from tether.store.engine import reading
from tether.store.ledger import make_ledger
from tether.store.tables import runs

log = logging.getLogger("tether.gateway")
SWEEP_EVERY_S = 30.0
# a provider key Vault could not give yet is asked for again this often
VAULT_RETRY_S = 5.0


class KillRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=2000)


def install(app: FastAPI, state: State) -> None:
    ks = state.killswitch
    rclient = None
    if state.settings.redis_url:
        from redis.asyncio import Redis

        # the ledger's own async client: its connections are made on the serving loop
        rclient = Redis.from_url(state.settings.redis_url)
    ledger = make_ledger(state.engine, rclient, pg=state.pg_async,
                         ttl_s=state.settings.budgets.reservation_ttl_s)  # fmt: skip
    upstream = Upstream()
    gateway = Gateway(
        state.settings, state.engine, authenticate=auth.request_authenticator(state), ledger=ledger,
        killswitch=ks, upstream=upstream, on_overshoot=overshoot.handler(state),
        pg=state.pg_async, inline=state.inline_db,
    )  # fmt: skip
    if state.metrics is not None:
        gateway.writer.observers.append(state.metrics.observe_gateway)
    # first in the route table: the hot path should not be matched against every API route
    state.llm_gateway = gateway
    routes = LLMRoutes(gateway)
    app.router.routes[0:0] = routes.routes()
    # and ahead of the framework's inner middleware (inside the body size limit, which
    # create_app adds after this, and the outer error middleware)
    app.add_middleware(FastPath, routes=routes)
    app.include_router(_kill_router(ks, state))

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with (
            gateway.writer.running(),
            gateway.guard.settler.running(),
            ks.lifespan(),
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(_sweep_loop, gateway)
            if gateway.registry.vault_keys():
                tg.start_soon(_vault_loop, gateway)
            tg.start_soon(_renew_loop, gateway)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        await upstream.aclose()
        if rclient is not None:
            from tether.store.redis_ledger import RedisLedger

            if isinstance(ledger, RedisLedger):
                await ledger.aclose()
            await rclient.aclose()

    state.lifespans.append(lifespan)


def _sweep_every_s(gateway: Gateway) -> float:
    # a short TTL (tests, small deployments) is swept as often as it can expire
    return min(SWEEP_EVERY_S, gateway.settings.budgets.reservation_ttl_s / 2)


async def _sweep_loop(gateway: Gateway) -> None:
    """Frees holds whose process died mid-call (their reservations expired)."""
    ledger = gateway.guard.ledger
    while True:
        await anyio.sleep(_sweep_every_s(gateway))
        try:
            await ledger.sweep_expired(datetime.now(UTC))
        except Exception:  # a background loop must outlive a database hiccup
            log.warning("reservation sweep failed; retrying later", exc_info=True)


async def _vault_loop(gateway: Gateway) -> None:
    """Re-reads the provider keys held in Vault every `vault.refresh_s` (a rotated key is used
    from the next call on), sooner while one of them could not be read."""
    vault = gateway.settings.vault
    assert vault is not None  # a Vault key exists only with a `vault:` section
    limiter = anyio.CapacityLimiter(1)
    while True:
        missing = any(not k.ok for k in gateway.registry.vault_keys())
        await anyio.sleep(min(vault.refresh_s, VAULT_RETRY_S) if missing else vault.refresh_s)
        try:
            await anyio.to_thread.run_sync(gateway.registry.refresh_vault_keys, limiter=limiter)
        except Exception:  # a background loop must outlive a Vault hiccup; the keys stay
            log.warning("refreshing provider keys from Vault failed; retrying", exc_info=True)


async def _renew_loop(gateway: Gateway) -> None:
    """Renews the holds of this process's calls in flight four times per TTL: three renewals
    may be late (a busy machine) before a sweep elsewhere could free a live hold."""
    every = gateway.settings.budgets.reservation_ttl_s / 4
    while True:
        await anyio.sleep(every)
        try:
            await gateway.guard.renew_live(datetime.now(UTC))
        except Exception:  # a background loop must outlive a database hiccup
            log.warning("renewing in-flight budget holds failed; retrying", exc_info=True)


def _kill_router(ks: KillSwitch, state: State) -> APIRouter:
    router = APIRouter(tags=["runs"])

    @router.post("/api/v1/runs/{run_id}/kill", summary="Kill a run")
    async def post_kill(
        run_id: str,
        body: KillRequest | None = Body(default=None),
        principal: Principal = Depends(require("admin")),
    ) -> dict[str, Any]:
        """Marks the run `killed` — running, awaiting approval or already ended (ending a run
        never dodges a kill) — ends its in-flight LLM streams (in every server process) within
        ~100 ms with a final error event, and refuses its later calls (HTTP 409 `run_killed`).
        A run already killed answers with its first kill. Audited."""
        reason = (body.reason if body else None) or f"killed by {principal.actor}"
        now = datetime.now(UTC)
        if await kill_run(ks, run_id, actor=principal.actor, reason=reason, now=now):
            return {"id": run_id, "status": "killed", "kill_reason": reason}
        row = await anyio.to_thread.run_sync(_run_status, state, run_id)
        if row is not None and row[0] == "killed":
            return {"id": run_id, "status": "killed", "kill_reason": row[1]}
        status = row[0] if row else "gone"
        raise ConflictError(f"run {run_id} already ended ({status}); there is nothing to kill")

    return router


def _run_status(state: State, run_id: str) -> tuple[str, str | None] | None:
    with reading(state.engine) as conn:
        row = conn.execute(
            select(runs.c.status, runs.c.kill_reason).where(runs.c.id == run_id)
        ).one_or_none()
    return None if row is None else (row.status, row.kill_reason)
