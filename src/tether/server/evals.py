"""Installs the evals area: eval, gate, rollout, routing and task routes under /api/v1, and the
loop that applies rollout rules on their schedule."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from tether.server import rollout_loop
from tether.server.deps import State
from tether.server.routes import evals, rollouts

PREFIX = "/api/v1"


def install(app: FastAPI, state: State) -> None:
    api = APIRouter(prefix=PREFIX)
    api.include_router(evals.router)
    api.include_router(rollouts.router)
    app.include_router(api)
    state.lifespans.append(rollout_loop.lifespan(state))  # type: ignore[arg-type]
