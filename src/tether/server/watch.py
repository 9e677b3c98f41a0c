"""Installs the watch area: the drift and alert routes under /api/v1, the eval re-runs on model
change points (when `watch.eval_on_model_change` names agents) and, unless `watch.enabled` is
false, the two background loops (costs, drift)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from tether.server import watch_costs, watch_drift
from tether.server.deps import State
from tether.server.model_change_evals import ModelChangeEvals
from tether.server.routes import watch as watch_routes
from tether.server.watch_settings import watch_config

PREFIX = "/api/v1"


def install(app: FastAPI, state: State) -> None:
    api = APIRouter(prefix=PREFIX)
    api.include_router(watch_routes.router)
    app.include_router(api)
    if state.settings.watch.eval_on_model_change:
        launcher = ModelChangeEvals(state.settings, state.engine)
        state.model_change_evals = launcher

        @asynccontextmanager
        async def evals_lifespan() -> AsyncIterator[None]:
            try:
                yield
            finally:
                launcher.close()

        state.lifespans.append(evals_lifespan)
    if state.settings.watch.enabled:
        config = watch_config(state.settings.watch)
        watch_costs.install(state, config)
        watch_drift.install(state, config)
