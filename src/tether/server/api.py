"""Installs the REST API (`/api/v1`), OTLP ingest (`/v1/traces`) and `/metrics` into the app."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from tether.server import metrics, otlp
from tether.server.deps import State
from tether.server.routes import (
    agents,
    checkpoints,
    costs,
    feedback,
    keys,
    runs,
    spans,
    threads,
)

PREFIX = "/api/v1"


def install(app: FastAPI, state: State) -> None:
    """Adds the routers."""
    api = APIRouter(prefix=PREFIX)
    for module in (runs, spans, feedback, agents, costs, keys, checkpoints, threads):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(otlp.router)
    app.include_router(metrics.router)
