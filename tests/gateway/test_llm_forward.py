"""Sending upstream against a raw TCP server that misbehaves the way real ones do: a keep-alive
connection closed just as it is reused is retried once; a reply cut mid-body never is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from tether.config import ProviderConfig
from tether.core.errors import UpstreamError
from tether.gateway.llm import forward
from tether.gateway.llm.provider import Target
from tether.gateway.llm.registry import make_provider

OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{"ok": true}'


async def _read_request(reader: asyncio.StreamReader) -> bool:
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return False
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    return True


async def serve(handler: Callable[..., object]) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def target() -> AsyncIterator[Callable[[int], Target]]:
    def make(port: int) -> Target:
        cfg = ProviderConfig(name="raw", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
        return Target(make_provider(cfg), "m")

    yield make


async def test_a_stale_keep_alive_connection_is_retried_once(
    target: Callable[[int], Target],
) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        if connections == 1:
            writer.write(OK)
            await writer.drain()
            await _read_request(reader)  # the next call arrives on the kept-alive connection...
        else:
            writer.write(OK)  # ...and a new connection gets the answer
            await writer.drain()
        writer.close()  # ...which the server closes without a word

    server, port = await serve(handler)
    client = forward.make_client()
    try:
        for _ in range(2):
            attempt = await forward.send(client, [target(port)], "chat/completions",
                                         lambda t: b"{}", stream=False)  # fmt: skip
            assert attempt.response.json() == {"ok": True}
        assert connections == 2
    finally:
        await client.aclose()
        server.close()


async def test_a_reply_cut_mid_body_is_an_error_not_a_retry(
    target: Callable[[int], Target],
) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial')
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    client = forward.make_client()
    try:
        with pytest.raises(UpstreamError, match="broke off"):
            await forward.send(client, [target(port)], "chat/completions", lambda t: b"{}",
                               stream=False)  # fmt: skip
        assert connections == 1
    finally:
        await client.aclose()
        server.close()
