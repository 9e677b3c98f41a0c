"""The ASGI app `tether serve` listens with while the real one loads behind it.

`/healthz` (liveness: the process is up and serving HTTP) answers at once; `/readyz` says
`unavailable` until the real app is built (migrations, the server's imports) and its lifespan
has started (the MCP gateway with its upstreams, the background loops), then it is the real
app's own check; every other request waits for the real app, then goes to it. So a restart is
alive in the time Python and uvicorn take to start, and the seconds the server's imports take
on a busy machine happen behind a listening socket. A build that fails stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only types: importing Starlette is part of what this app defers
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("tether.serve")

# How long a request that arrives during start-up waits for the app before a 503.
WAIT_FOR_APP_S = 300.0

# How long an idle keep-alive connection stays open. Longer than the idle expiry of the clients
# that call tether (httpx and the SDK's pool: 5 s; load balancers: 60 s), so the client always
# closes first: with uvicorn's default of 5 s a client reusing a connection the server is
# closing at that moment gets "connection reset" on a request that never reached tether.
KEEP_ALIVE_S = 75


class Starting:
    """Wraps `build` (run in a thread at start-up; returns the real ASGI app)."""

    def __init__(
        self,
        build: Callable[[], ASGIApp],
        *,
        on_failure: Callable[[Exception], None] | None = None,
        wait_s: float = WAIT_FOR_APP_S,
    ) -> None:
        self._build = build
        self.on_failure = on_failure
        self._wait_s = wait_s
        self.app: ASGIApp | None = None
        self.failure: Exception | None = None
        self._settled: asyncio.Event | None = None  # made in the server's event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if self.app is None:
            path = scope.get("path")
            if scope["type"] == "http" and path == "/healthz":
                await _json(send, 200, {"status": "ok"})
                return
            if scope["type"] == "http" and path == "/readyz":
                await _json(send, 503, {"status": "unavailable"})
                return
            await self._wait()
        if self.app is None:
            if scope["type"] == "http":
                await _json(send, 503, {"error": {"type": "unavailable", "code": "starting",
                                                  "message": "tether is still starting or failed "
                                                  "to start; see its log"}})  # fmt: skip
            return
        await self.app(scope, receive, send)

    async def _wait(self) -> None:
        if self._settled is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), self._wait_s)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._settled = asyncio.Event()
        message = await receive()
        assert message["type"] == "lifespan.startup"
        stop = asyncio.Event()
        runner = asyncio.create_task(self._run(scope, stop))
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await send({"type": "lifespan.shutdown.complete"})

    async def _run(self, scope: Scope, stop: asyncio.Event) -> None:
        """Builds the app, runs its lifespan until `stop`, then shuts it down."""
        assert self._settled is not None
        try:
            app = await asyncio.to_thread(self._build)
        except Exception as exc:  # start-up's boundary: a failure to build ends the server
            self._fail(exc)
            return
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        outbox: asyncio.Queue[Message] = asyncio.Queue()
        inner: asyncio.Task[None] = asyncio.ensure_future(app(scope, inbox.get, outbox.put))
        await inbox.put({"type": "lifespan.startup"})
        started = await _next(outbox, inner)
        if started.get("type") != "lifespan.startup.complete":
            self._fail(RuntimeError(f"tether failed to start: {started.get('message', '')}"))
            inner.cancel()
            return
        _freeze_heap()
        self.app = app
        self._settled.set()
        log.info("tether is ready")
        await stop.wait()
        await inbox.put({"type": "lifespan.shutdown"})
        await _next(outbox, inner)
        await inner

    def _fail(self, exc: Exception) -> None:
        self.failure = exc
        log.error("tether failed to start", exc_info=exc)
        assert self._settled is not None
        self._settled.set()
        if self.on_failure is not None:
            self.on_failure(exc)


def _freeze_heap() -> None:
    """Moves what start-up allocated (modules, routes, schemas, SQLAlchemy metadata: about a
    million objects that live as long as the process) out of the garbage collector's sight.
    Otherwise each full collection walks all of it again: with ingest allocating a dict or two
    per span, one every second or two, 150 ms of CPU each."""
    gc.collect()
    gc.freeze()


async def _next(outbox: asyncio.Queue[Message], inner: asyncio.Task[Any]) -> Message:
    """The inner app's next lifespan message, or a failure if it ended without one."""
    got = asyncio.ensure_future(outbox.get())
    done, _ = await asyncio.wait({got, inner}, return_when=asyncio.FIRST_COMPLETED)
    if got in done:
        return got.result()
    got.cancel()
    exc = inner.exception()
    return {"type": "lifespan.startup.failed", "message": repr(exc) if exc else "ended early"}


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
