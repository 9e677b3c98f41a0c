"""Installs the governance area: policy and audit routes, and loading the `policies` folder at
start-up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime

import anyio
from fastapi import APIRouter, FastAPI

from tether.core.errors import ConfigError
from tether.core.policy import PolicyError
from tether.server.deps import State
from tether.server.routes import audit, lists, policies, provenance, redteam
from tether.store import policies as policy_store

PREFIX = "/api/v1"


def load_policies(state: State) -> list[policy_store.Applied]:
    """Applies every policy file of `settings.policies` (a new version only where changed)."""
    folder = state.settings.policies
    if folder is None:
        return []
    if not folder.is_dir():
        raise ConfigError(
            f"policies folder {folder} does not exist; fix `policies:` in tether.yaml"
        )
    try:
        return policy_store.load_folder(state.engine, folder, datetime.now(UTC))
    except PolicyError as exc:
        raise ConfigError(f"invalid policy file:\n{exc.message}") from None


def _policy_loader(state: State) -> Callable[[], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        applied = await anyio.to_thread.run_sync(load_policies, state)
        state.policies_loaded = [(a.agent, a.version) for a in applied]
        yield

    return lifespan


def install(app: FastAPI, state: State) -> None:
    """Routes under /api/v1 and the policy folder loader."""
    api = APIRouter(prefix=PREFIX)
    api.include_router(policies.router)
    api.include_router(audit.router)
    api.include_router(lists.router)
    api.include_router(provenance.router)
    api.include_router(redteam.router)
    app.include_router(api)
    state.lifespans.append(_policy_loader(state))
