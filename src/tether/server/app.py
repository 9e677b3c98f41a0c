"""`create_app(settings)`: builds the ASGI app; nothing happens at import time."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine

from tether._version import __version__
from tether.config import Settings
from tether.server import (
    api,
    checkpoint_lane,
    console,
    errors,
    eval_lane,
    evals,
    export_otlp,
    governance,
    health,
    llm,
    mcp,
    memory_area,
    openapi,
    store_upkeep,
    watch,
)
from tether.server.deps import State
from tether.server.lane import Lane
from tether.server.limits import BodySizeLimit
from tether.store.engine import make_engine


def create_app(settings: Settings, *, engine: Engine | None = None) -> FastAPI:
    """The whole of tether as one ASGI app. The database must already be migrated."""
    client = None
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url)
    # the MCP guard's rate limiter is built with the State: it must see the Redis client
    if engine is None:
        engine = make_engine(settings.db_url, pool_size=settings.db_pool_size)
    state = State(settings=settings, engine=engine, redis=client)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for factory in state.lifespans:
                await stack.enter_async_context(factory())
            yield
        if state.redis is not None:
            state.redis.close()

    app = FastAPI(
        **_no_framework_telemetry(),
        title="tether",
        version=__version__,
        description="AgentOps control plane: runs, spans, costs, budgets, policies, approvals.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.tether = state
    errors.install(app)
    app.include_router(health.router)
    # Each area registers its routes, mounts and background loops.
    api.install(app, state)
    llm.install(app, state)
    governance.install(app, state)
    memory_area.install(app, state)  # before mcp: the gateway serves the memory.* tools
    mcp.install(app, state)
    evals.install(app, state)
    console.install(app, state)
    export_otlp.install(app, state)
    watch.install(app, state)
    store_upkeep.install(state)
    openapi.install(app)  # after every route: ids and error responses of the whole API
    # the hot API routes straight to their endpoints, inside the size limit
    lane_routes = {**checkpoint_lane.ROUTES, **eval_lane.ROUTES}
    app.add_middleware(Lane, state=state, routes=lane_routes)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    return app


def _no_framework_telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry instrumentation (recent versions) stays off: tether records
    what it serves itself, and the check alone read os.environ three times per request (a few
    per cent of the LLM gateway's CPU, issue 9)."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
