"""Per-application state shared by routes, gateways and background loops (no globals)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request
from sqlalchemy import Engine

from tether.config import Settings

if TYPE_CHECKING:
    from tether.server.memory import MemoryService


@dataclass
class State:
    """What a running tether holds in memory. Areas attach their own services in `extras`."""

    settings: Settings
    engine: Engine
    redis: Any | None = None
    memory: MemoryService | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    # entered in order at start-up and left in reverse at shutdown (background loops, MCP upstreams)
    lifespans: list[Callable[[], AbstractAsyncContextManager[Any]]] = field(default_factory=list)


def get_state(request: Request) -> State:
    state: State = request.app.state.tether
    return state
