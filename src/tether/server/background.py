"""A task that lives as long as the app: started with the lifespan, cancelled at shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio


def background(
    task: Callable[[], Coroutine[Any, Any, None]],
) -> Callable[[], AbstractAsyncContextManager[None]]:
    """A lifespan factory (for `State.lifespans`) that runs `task` until the app stops."""

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(task)
            yield
            tg.cancel_scope.cancel()

    return lifespan
