"""`GET /metrics` and the app's Metrics (server/metrics.py): created at start-up, reported to
by ingest and the gateway, its metrics lease given up at shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from tether.server import overshoot
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.server.metrics import Metrics

log = logging.getLogger("tether.metrics")
router = APIRouter()


def install(app: FastAPI, state: State) -> None:
    """Creates the app's Metrics, the /metrics route, and gives up the lease at shutdown."""
    state.metrics = Metrics(state.settings, state.engine)
    app.include_router(router)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(_release(state.metrics))

    state.lifespans.append(lifespan)


def _release(metrics: Metrics | None) -> Callable[[], None]:
    def release() -> None:
        if metrics is None:
            return
        try:
            metrics.ledger.release()
        except Exception:  # shutting down: the lease expires by itself
            log.warning("could not release the metrics lease", exc_info=True)

    return release


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    description="Needs a key with the read scope: Prometheus `authorization: {credentials: KEY}`.",
    tags=["metrics"],
)
async def metrics(
    state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> Response:
    assert state.metrics is not None
    body = await anyio.to_thread.run_sync(state.metrics.render)
    if state.metrics.ledger.leader:  # store-derived too: from the exporting replica only
        lines = await anyio.to_thread.run_sync(overshoot.metric_lines, state.engine)
        body += ("\n".join(lines) + "\n").encode()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
