"""server/starting.py: `/healthz` answers while the real app is still being built, `/readyz` is
honest about it, other requests wait for the real app, and a failed build stops the server."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from tether.server.starting import Starting

BOUND_S = 60.0  # generous: the machine may be busy


def inner_app(events: list[str]) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("started")
        yield
        events.append("stopped")

    async def hello(request: Any) -> JSONResponse:
        return JSONResponse({"from": "app"})

    async def readyz(request: Any) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/hello", hello), Route("/readyz", readyz)],
                     lifespan=lifespan)  # fmt: skip


class Lifespan:
    """Drives an ASGI app's lifespan the way uvicorn does."""

    def __init__(self, app: Starting) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.create_task(app(scope, self.inbox.get, self.outbox.put))

    async def send(self, kind: str) -> str:
        await self.inbox.put({"type": kind})
        got = await asyncio.wait_for(self.outbox.get(), BOUND_S)
        return str(got["type"])


async def test_alive_at_once_ready_when_built_and_requests_wait_for_the_app() -> None:
    release, events = threading.Event(), []

    def build() -> Starlette:
        assert release.wait(BOUND_S)
        return inner_app(events)

    app = Starting(build)
    life = Lifespan(app)
    assert await life.send("lifespan.startup") == "lifespan.startup.complete"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tether") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        not_yet = await client.get("/readyz")
        assert not_yet.status_code == 503 and not_yet.json() == {"status": "unavailable"}
        waiting = asyncio.create_task(client.get("/hello"))
        release.set()
        answered = await asyncio.wait_for(waiting, BOUND_S)
        assert answered.json() == {"from": "app"}
        assert events == ["started"]
        assert (await client.get("/readyz")).json() == {"status": "ok"}  # the app's own check
    assert await life.send("lifespan.shutdown") == "lifespan.shutdown.complete"
    assert events == ["started", "stopped"]


async def test_what_start_up_built_is_frozen_out_of_the_collectors_sight() -> None:
    """Full collections would otherwise walk the whole start-up heap again every second or
    two under ingest (150 ms of CPU each)."""
    built: list[Starlette] = []

    def build() -> Starlette:
        built.append(inner_app([]))
        return built[0]

    app = Starting(build)
    life = Lifespan(app)
    try:
        assert await life.send("lifespan.startup") == "lifespan.startup.complete"
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tether") as client:
            assert (await client.get("/hello")).json() == {"from": "app"}
        assert gc.get_freeze_count() > 0
        assert not any(o is built[0] for o in gc.get_objects())  # frozen: not collected
        assert await life.send("lifespan.shutdown") == "lifespan.shutdown.complete"
    finally:
        gc.unfreeze()  # the rest of this test process collects as usual


async def test_a_failed_build_stops_the_server_and_requests_get_a_503() -> None:
    failures: list[Exception] = []

    def build() -> Starlette:
        raise RuntimeError("no database")

    app = Starting(build, on_failure=failures.append)
    life = Lifespan(app)
    assert await life.send("lifespan.startup") == "lifespan.startup.complete"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tether") as client:
        refused = await client.get("/hello")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "starting"
        assert (await client.get("/readyz")).status_code == 503
    assert [str(f) for f in failures] == ["no database"]
    assert await life.send("lifespan.shutdown") == "lifespan.shutdown.complete"
