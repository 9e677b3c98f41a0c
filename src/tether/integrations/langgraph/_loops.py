"""The async saver's connections, one set per event loop (a connection belongs to the loop that
opened it), each closed in its own loop when that loop shuts down.

`asyncio.run()` (and `asyncio.Runner`, pytest-asyncio, anyio) end a loop with
`loop.shutdown_asyncgens()`, which closes the async generators started in it: a parked one per
loop (`_closer`) closes that loop's httpx.AsyncClient and AsyncWire there, and nothing stays
open once the loop is gone. A loop closed without that step cannot run anything any more: its
connections are dropped when the next loop starts, as a socket dropped unclosed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

import httpx

from tether.integrations.langgraph._http import AsyncWire


@dataclass
class LoopConnections:
    """One event loop's httpx client and lean wire (each opened on its first use)."""

    client: httpx.AsyncClient | None = None
    wire: AsyncWire | None = None
    closer: AsyncGenerator[None, None] | None = field(default=None, repr=False)

    async def aclose(self) -> None:
        client, wire, self.client, self.wire = self.client, self.wire, None, None
        try:
            if client is not None:
                await client.aclose()
        finally:
            if wire is not None:
                await wire.close()


class PerLoop:
    """`LoopConnections` by running event loop."""

    def __init__(
        self,
        new_client: Callable[[], httpx.AsyncClient],
        new_wire: Callable[[], AsyncWire] | None,
    ) -> None:
        self._new_client = new_client
        self._new_wire = new_wire  # None: every call goes through httpx
        self._loops: dict[asyncio.AbstractEventLoop, LoopConnections] = {}

    async def _here(self) -> LoopConnections:
        loop = asyncio.get_running_loop()
        conns = self._loops.get(loop)
        if conns is None:
            for gone in [lp for lp in self._loops if lp.is_closed()]:
                self._loops.pop(gone, None)  # closed without shutting its generators down
            conns = self._loops[loop] = LoopConnections()
            conns.closer = self._closer(loop, conns)
            await anext(conns.closer)  # parked until the loop shuts down (or aclose)
        return conns

    async def _closer(
        self, loop: asyncio.AbstractEventLoop, conns: LoopConnections
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if self._loops.get(loop) is conns:
                del self._loops[loop]
            await conns.aclose()

    async def client(self) -> httpx.AsyncClient:
        conns = await self._here()
        if conns.client is None:
            conns.client = self._new_client()
        return conns.client

    async def wire(self) -> AsyncWire | None:
        if self._new_wire is None:
            return None
        conns = await self._here()
        if conns.wire is None:
            conns.wire = self._new_wire()
        return conns.wire

    async def aclose(self) -> None:
        """Closes the running loop's connections (other loops close theirs as they end)."""
        conns = self._loops.get(asyncio.get_running_loop())
        if conns is not None and conns.closer is not None:
            await conns.closer.aclose()
