"""Installs the MCP gateway (/mcp), the tool registry, approvals and /decide routes, the sync of
configured HTTP tools, and the sweep that applies the default to expired holds."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
from fastapi import APIRouter, FastAPI

from tether.gateway.mcp.app import mount
from tether.gateway.mcp.builtin import sync_builtins
from tether.server.auth import request_authenticator
from tether.server.deps import State
from tether.server.memory_tools import MemoryTools
from tether.server.routes import approvals, decide, tools
from tether.store import approvals as approval_store
from tether.store import tools as registry

if TYPE_CHECKING:
    from tether.gateway.mcp.proxy import Gateway

log = logging.getLogger("tether.mcp")

SWEEP_EVERY_S = 5.0


def _sync_http_tools(state: State) -> None:
    specs = [
        registry.ToolSpec(
            name=t.name, server=t.name.split(".", 1)[0] if "." in t.name else "http",
            kind="http", description=t.description, input_schema=t.input_schema,
            tags=tuple(t.tags), owner=t.owner, rate_limit=t.rate_limit, url=t.url,
            systems=tuple(t.systems),
        )
        for t in state.settings.http_tools
    ]  # fmt: skip
    registry.sync_tools(state.engine, specs, now=datetime.now(UTC), actor="config")


def install(app: FastAPI, state: State) -> None:
    api = APIRouter(prefix="/api/v1")
    for module in (tools, approvals, decide):
        api.include_router(module.router)
    app.include_router(api)

    builtins = [MemoryTools(state.memory)] if state.memory is not None else []

    @asynccontextmanager
    async def housekeeping() -> AsyncIterator[None]:
        if state.settings.http_tools:
            await anyio.to_thread.run_sync(_sync_http_tools, state)
        if builtins:  # their tools are listed and governed before any agent connects
            await anyio.to_thread.run_sync(
                lambda: sync_builtins(state.engine, builtins, now=datetime.now(UTC))
            )
        async with anyio.create_task_group() as tg:
            tg.start_soon(_sweep, state)
            yield
            tg.cancel_scope.cancel()

    state.lifespans.append(housekeeping)

    def build() -> Gateway:
        from tether.gateway.mcp.proxy import Gateway  # the MCP SDK: loaded when first needed

        return Gateway(
            state.settings, state.engine, state.guard, wakers=state.approval_wakers,
            announce=state.webhooks.announce, builtins=builtins,
        )  # fmt: skip

    # Upstreams connect (and register their tools) at start-up; with none, nothing needs the
    # SDK until an agent calls /mcp.
    eager = bool(state.settings.mcp_servers)
    mount(app, build, request_authenticator(state), state.lifespans, eager=eager)


async def _sweep(state: State) -> None:
    """Expires holds nobody is waiting on (a waiter expires its own at once)."""
    while True:
        await anyio.sleep(SWEEP_EVERY_S)
        try:
            await anyio.to_thread.run_sync(
                lambda: approval_store.expire_due(state.engine, now=datetime.now(UTC))
            )
        except Exception:  # a background loop's boundary: log and keep sweeping
            log.exception("approval expiry sweep failed")
