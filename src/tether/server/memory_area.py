"""Installs the memory area: the service (state.memory), its routes under /api/v1/memory, and
opening its vector index at start-up. Apart from server/memory.py so the service does not
import the state that holds it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from tether.server.deps import State
from tether.server.memory import MemoryService
from tether.server.routes import memory as routes


def install(app: FastAPI, state: State) -> None:
    """The memory routes under /api/v1/memory and the service behind them and the MCP tools."""
    state.memory = MemoryService(state.settings, state.engine, app)
    app.include_router(routes.router, prefix="/api/v1")

    @asynccontextmanager
    async def index() -> AsyncIterator[None]:
        assert state.memory is not None
        await anyio.to_thread.run_sync(state.memory.open_index_at_start)
        yield

    state.lifespans.append(index)
