"""Connection-slot accounting for the upstream transport (wire.py): at most `limit` connections
per origin are open, busy or idle; a caller beyond that waits in line (first come, first
served) until one is given back, up to its pool timeout, then gets httpx.PoolTimeout."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

import httpx


class Slots:
    """The open connections one origin may still have; callers beyond wait in line (FIFO)."""

    def __init__(self, limit: int) -> None:
        self.free = limit
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def take(self, timeout: float | None, request: httpx.Request) -> None:
        if self.free > 0:
            self.free -= 1
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.waiters.append(fut)
        timer = None if timeout is None else loop.call_later(timeout, _no_slot, fut, timeout)
        try:
            await fut
        except BaseException:
            if fut.cancelled():  # cancelled in line
                self.waiters.remove(fut)
            elif (exc := fut.exception()) is None:
                self.give()  # handed a slot, then cancelled before it could be used
            else:  # the PoolTimeout, already out of line
                cast(httpx.PoolTimeout, exc).request = request
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def give(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the first in line
                return
        self.free += 1


def _no_slot(fut: asyncio.Future[None], timeout: float) -> None:
    if not fut.done():
        fut.set_exception(httpx.PoolTimeout(f"no free upstream connection in {timeout} s"))
