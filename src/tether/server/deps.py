"""The composition root's state: one typed object per app holding each component and what it
caches, built from settings, an engine and (optionally) Redis. No globals; nothing string-keyed.

Each field says who owns it. An area that needs a new service adds a typed field here (built in
`__post_init__` when it needs only settings, the engine and Redis), never a string-keyed bag.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import Request
from sqlalchemy import Engine

from tether.config import Settings
from tether.core.principal import Principal
from tether.gateway.llm.killswitch import KillSwitch
from tether.gateway.mcp.guard import Guard
from tether.server.webhooks import Webhooks
from tether.store.approvals import Wakers
from tether.store.inline import InlineSQLite, inline_for
from tether.store.keys import ApiKey
from tether.store.pg_async import AsyncPG
from tether.store.rollouts import ArmsCache

if TYPE_CHECKING:
    from jinja2 import Environment
    from redis import Redis

    from tether.core.pricing import PriceTable
    from tether.server.memory import MemoryService
    from tether.server.metrics import Metrics
    from tether.server.model_change_evals import ModelChangeEvals

# (time.monotonic() when computed, value)
Cached = tuple[float, Any]


KeyHit = tuple[float, Principal | None, ApiKey | None]


@dataclass
class State:
    """What a running tether holds in memory."""

    settings: Settings
    engine: Engine
    redis: Redis | None = None
    # server/memory.py: the memory service (its vector index opens at start-up)
    memory: MemoryService | None = None
    # metrics.py: the app's prometheus_client registry; otlp.py and the gateway report to it
    metrics: Metrics | None = None
    # evals area: the newest rollout per agent, cached for routing (server/routes/rollouts.py)
    route_cache: Any | None = None
    # evals area: each rollout's figures so far, read incrementally by its rule (store/rollouts)
    arms_cache: ArmsCache = field(default_factory=ArmsCache)
    # server/llm.py: the LLM gateway (the evals area flushes its span writer before a check)
    llm_gateway: Any | None = None
    # watch area: re-runs eval suites on model change points (watch.eval_on_model_change)
    model_change_evals: ModelChangeEvals | None = None
    # entered in order at start-up and left in reverse at shutdown (background loops, MCP upstreams)
    lifespans: list[Callable[[], AbstractAsyncContextManager[Any]]] = field(default_factory=list)

    # auth.py: secret -> (time.monotonic() of the lookup, its Principal or None if unknown)
    key_cache: dict[str, tuple[float, Principal | None, ApiKey | None]] = field(
        default_factory=dict
    )
    # otlp.py: whether ingest is open (no key yet, loopback only), checked every few seconds
    ingest_open: tuple[float, bool] | None = None
    # otlp.py: bundled prices with tether.yaml overrides, loaded on the first ingest
    price_table: PriceTable | None = None
    # otlp.py: export requests read and stored at once (made on the first, in the event loop)
    ingest_slots: anyio.CapacityLimiter | None = None
    # otlp.py, SQLite: export requests decoded or waiting for their group commit
    ingest_in_flight: anyio.CapacityLimiter | None = None
    # governance.py: (agent, version) of each policy the `policies` folder applied at start-up
    policies_loaded: list[tuple[str, int]] = field(default_factory=list)
    # approvals: in-process wake-ups, set when this process decides a hold
    approval_wakers: Wakers = field(default_factory=Wakers)
    # console: the page cache (aggregates), its cookie signing key and revoked-key checks
    console_env: Environment | None = None
    console_cache: dict[tuple[Any, ...], Cached] = field(default_factory=dict)
    console_secret: bytes | None = None
    console_live_keys: dict[str, tuple[float, bool]] = field(default_factory=dict)

    # components built from the above
    killswitch: KillSwitch = field(init=False)  # LLM gateway, kill routes, console
    guard: Guard = field(init=False)  # MCP gateway and /api/v1/decide
    webhooks: Webhooks = field(init=False)  # approval announcements
    # server/db_call.py: a no-wait connection for short SQLite transactions on the event loop
    # (the checkpoint routes); None on PostgreSQL
    inline_db: InlineSQLite | None = field(init=False)
    # server/db_call.py: an async pool for the checkpoint routes' single statements; None on
    # SQLite
    pg_async: AsyncPG | None = field(init=False)

    def __post_init__(self) -> None:
        self.killswitch = KillSwitch(self.engine)
        self.guard = Guard(
            self.engine,
            redis=self.redis,
            approval_timeout_s=self.settings.approval_timeout_s,
            redact=tuple(self.settings.redact_fields),
        )
        self.webhooks = Webhooks(self.settings)
        self.inline_db = inline_for(self.engine)
        self.pg_async = None
        if self.engine.dialect.name == "postgresql":
            n = self.settings.db_pool_size  # the async pool is bounded by it too
            self.pg_async = AsyncPG(self.engine.url, pool_size=min(4, n), tx_size=min(8, 2 * n))
            self.lifespans.append(self.pg_async.lifespan)


async def get_state(request: Request) -> State:
    # async: FastAPI runs a plain `def` dependency on a worker thread, a hop per request
    state: State = request.app.state.tether
    return state
