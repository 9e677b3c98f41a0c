"""The upstream transport (gateway/llm/wire.py) against a raw TCP server: keep-alive reuse,
chunked and close-delimited bodies, `Connection: close`, a reply that stalls, a refused port."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tether.gateway.llm.wire import LeanTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/x"


async def post(client: httpx.AsyncClient, url: str, body: bytes = b'{"a": 1}') -> httpx.Response:
    request = httpx.Request("POST", url, content=body, headers={"authorization": "Bearer k"},
                            extensions={"timeout": {"connect": 2.0, "read": 0.5}})  # fmt: skip
    response = await client.send(request)
    await response.aclose()
    return response


async def test_one_connection_serves_many_calls_and_the_request_is_sent_whole() -> None:
    seen: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while (request := await read_request(reader)) is not None:
            seen.append(request)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server, url = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        for _ in range(5):
            assert (await post(client, url)).content == b"ok"
    server.close()
    assert connections == 1 and len(seen) == 5
    assert seen[0].startswith(b"POST /v1/x HTTP/1.1\r\n")
    assert b"\r\nauthorization: Bearer k\r\n" in seen[0] and seen[0].endswith(b'{"a": 1}')


@pytest.mark.parametrize(
    ("reply", "body", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
         b"abcde", True),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nxyz", b"xyz", False),
        (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end", b"until the end",
         False),
    ],
)  # fmt: skip
async def test_bodies_however_delimited(reply: bytes, body: bytes, reused: bool) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while await read_request(reader) is not None:
            writer.write(reply)
            await writer.drain()
            if not reused:  # close-delimited, or `connection: close`
                break
        writer.close()

    server, url = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        for _ in range(2):
            assert (await post(client, url)).content == body
    server.close()
    assert connections == (1 if reused else 2)


async def test_a_stalled_reply_times_out_and_its_connection_is_not_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        if connections == 1:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhal")
            await writer.drain()
            await asyncio.sleep(2)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server, url = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.send(httpx.Request("POST", url, content=b"{}",
                                            extensions={"timeout": {"read": 0.3}}))  # fmt: skip
        assert (await post(client, url)).content == b"ok"
    server.close()
    assert connections == 2


async def test_a_refused_port_is_a_connect_error() -> None:
    server, url = await serve(lambda r, w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await post(client, url)
