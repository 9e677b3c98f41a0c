"""The upstream transport (gateway/llm/wire.py) against a raw TCP server: keep-alive reuse,
chunked and close-delimited bodies, `Connection: close`, a reply that stalls, a refused port."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tether.config import ProviderConfig
from tether.core.errors import UpstreamError
from tether.gateway.llm import forward
from tether.gateway.llm.provider import Target
from tether.gateway.llm.registry import make_provider
from tether.gateway.llm.wire import LeanTransport, StaleConnection

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
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


# ---------------------------------------------------------------- a retry never double-bills


def _raw_target(port: int) -> Target:
    cfg = ProviderConfig(name="raw", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    return Target(make_provider(cfg), "m")


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # an RST, not a FIN: a ReadError on the client


@pytest.mark.parametrize(
    ("reused", "drop"),
    [(False, b""), (False, b"reset"), (True, b"HTTP/1.1 20")],
)
async def test_a_connection_dropped_after_the_request_is_not_sent_again(
    reused: bool, drop: bytes
) -> None:
    """A fresh connection (or a reused one that began its reply) dropped before the head: the
    provider may be generating, and billing, that call; forward.py must not resend it."""
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        while await read_request(reader) is not None:
            requests += 1
            if reused and requests == 1:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
                continue
            if drop == b"reset":
                _reset(writer)
                return
            writer.write(drop)
            await writer.drain()
            break
        writer.close()

    server, url = await serve(handler)
    port = int(url.split(":")[2].split("/")[0])
    client = forward.make_client()
    try:
        if reused:
            await forward.send(client, [_raw_target(port)], "x", lambda t: b"{}", stream=False)
        with pytest.raises(UpstreamError, match="broke off"):
            await forward.send(client, [_raw_target(port)], "x", lambda t: b"{}", stream=False)
    finally:
        await client.aclose()
        server.close()
    assert requests == (2 if reused else 1)


async def test_only_a_reused_connection_closed_before_any_byte_is_stale() -> None:
    calls = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        while await read_request(reader) is not None:
            calls += 1
            if calls in (2, 3):  # the 2nd on a reused connection, the 3rd on a fresh one
                break
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server, url = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        assert (await post(client, url)).content == b"ok"
        with pytest.raises(StaleConnection):
            await post(client, url)
        with pytest.raises(httpx.RemoteProtocolError) as fresh:
            await post(client, url)
        assert not isinstance(fresh.value, StaleConnection)
    server.close()


# ---------------------------------------------------------------- at most max_connections open


async def test_open_connections_are_capped_and_a_slot_is_freed_however_a_call_ends() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while (request := await read_request(reader)) is not None:
            if b"stall" in request:
                await reader.read()  # no reply, until the client gives up
                break
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    def request(body: bytes = b"{}", pool: float = 0.2) -> httpx.Request:
        return httpx.Request("POST", url, content=body,
                             extensions={"timeout": {"read": 0.2, "pool": pool}})  # fmt: skip

    server, url = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport(max_connections=1)) as client:
        with pytest.raises(httpx.ReadTimeout):  # an error frees its slot...
            await client.send(request(b"stall"))
        task = asyncio.create_task(client.send(request(b"stall")))
        await asyncio.sleep(0.05)
        task.cancel()  # ...and so does a cancel while the head is awaited
        with pytest.raises(asyncio.CancelledError):
            await task
        held = await client.send(request(), stream=True)  # open until closed
        with pytest.raises(httpx.PoolTimeout):
            await client.send(request())
        waiter = asyncio.create_task(client.send(request(pool=2.0)))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        assert await held.aread() == b"ok"  # read through: the waiter gets the connection
        assert (await waiter).content == b"ok"
        unread = await client.send(request(), stream=True)
        await unread.aclose()  # closed unread: its connection goes, its slot is free
        assert (await client.send(request())).content == b"ok"
    server.close()
    assert connections == 4  # two dropped by the errors, one until the unread close, one after


# ---------------------------------------------------------------- bytes after a complete reply


async def test_bytes_after_a_complete_reply_are_not_part_of_it_and_end_the_connection() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while await read_request(reader) is not None:
            writer.write(OK + b"HTTP/1.1 200 OK\r\nx-extra: 1\r\ncontent-length: 3\r\n\r\nbad")
            await writer.drain()
        writer.close()

    server, url = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        for _ in range(2):
            response = await post(client, url)
            assert response.content == b"ok" and "x-extra" not in response.headers
    server.close()
    assert connections == 2


# ---------------------------------------------------------------- replies without a body


@pytest.mark.parametrize(
    ("method", "reply"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"),
        ("HEAD", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
        ("POST", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("POST", b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n"),
        ("POST", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
    ],
)
async def test_replies_without_a_body_end_at_their_head(method: str, reply: bytes) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = True
        while await read_request(reader) is not None:
            writer.write(reply if first else b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            first = False
            await writer.drain()
        writer.close()

    server, url = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        request = httpx.Request(method, url, content=b"",
                                extensions={"timeout": {"read": 1.0}})  # fmt: skip
        response = await client.send(request)
        assert response.content == b"" and response.status_code in (200, 204, 304)
        assert (await post(client, url)).content == b"ok"  # the connection is still sound
    server.close()
    assert connections == 1
