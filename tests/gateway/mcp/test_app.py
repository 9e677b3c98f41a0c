"""/mcp's start (gateway/mcp/app.py): with no upstream MCP servers the gateway is built at the
first authenticated request, once however many arrive together; a start that fails is answered
503 and tried again by the next request; with upstreams it starts with the app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mcp.server.lowlevel import Server
from starlette.requests import Request

from tether.core.errors import AuthenticationError
from tether.core.principal import Principal
from tether.gateway.mcp.app import McpEndpoint, mount
from tether.gateway.mcp.proxy import Gateway

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "t", "version": "1"}}}  # fmt: skip
HEADERS = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18",
           "Authorization": "Bearer agent-key"}  # fmt: skip


class FakeGateway:
    """What the endpoint uses of a Gateway: its low-level server and its running()."""

    def __init__(self) -> None:
        self.server: Server[Any] = Server("fake")
        self.running_now = False

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self.running_now = True
        try:
            yield
        finally:
            self.running_now = False


async def agent_key(request: Request) -> Principal:
    if request.headers.get("authorization") != "Bearer agent-key":
        raise AuthenticationError("no such key")
    return Principal(key_id="key_1", scopes=frozenset({"agent"}), agent="triage")


@contextmanager
def serving(build: Callable[[], Any], *, eager: bool) -> Iterator[tuple[TestClient, McpEndpoint]]:
    lifespans: list[Any] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for factory in lifespans:
                await stack.enter_async_context(factory())
            yield

    app = FastAPI(lifespan=lifespan)
    endpoint = mount(app, cast(Callable[[], Gateway], build), agent_key, lifespans, eager=eager)
    with TestClient(app) as client:
        yield client, endpoint


def test_without_upstreams_the_first_requests_build_the_gateway_once() -> None:
    built: list[FakeGateway] = []

    def build() -> FakeGateway:
        built.append(FakeGateway())
        return built[-1]

    with serving(build, eager=False) as (client, endpoint):
        assert built == [] and endpoint.manager is None
        refused = client.post("/mcp", json=INIT, headers={**HEADERS, "Authorization": "Bearer x"})
        assert refused.status_code == 401 and built == []  # a refused key starts nothing
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: client.post("/mcp", json=INIT, headers=HEADERS),
                                    range(6)))  # fmt: skip
        assert [r.status_code for r in answers] == [200] * 6, answers[0].text
        assert len(built) == 1 and built[0].running_now
        assert client.post("/mcp", json=INIT, headers=HEADERS).status_code == 200
        assert len(built) == 1
    assert not built[0].running_now and endpoint.manager is None  # stopped with the app


def test_a_failed_start_is_a_503_and_the_next_request_tries_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[int] = []

    def build() -> FakeGateway:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first start fails")
        return FakeGateway()

    with serving(build, eager=False) as (client, _), caplog.at_level(logging.ERROR):
        first = client.post("/mcp", json=INIT, headers=HEADERS)
        assert first.status_code == 503 and first.json()["error"]["type"] == "unavailable"
        assert "the MCP gateway failed to start" in caplog.text
        assert client.post("/mcp", json=INIT, headers=HEADERS).status_code == 200
    assert len(attempts) == 2


def test_with_upstreams_the_gateway_starts_with_the_app() -> None:
    built: list[FakeGateway] = []

    def build() -> FakeGateway:
        built.append(FakeGateway())
        return built[-1]

    with serving(build, eager=True) as (client, endpoint):
        assert len(built) == 1 and built[0].running_now and endpoint.manager is not None
        assert client.post("/mcp", json=INIT, headers=HEADERS).status_code == 200
        assert len(built) == 1
