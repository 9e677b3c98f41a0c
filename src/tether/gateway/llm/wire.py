"""The LLM gateway's upstream HTTP/1.1 transport: an httpx transport over asyncio protocols, with
httptools' C parser (uvicorn's) and a keep-alive pool.

Why not httpcore: on the gateway's budgeted path its pool, h11 and the anyio streams cost more
CPU per call than all of tether's own work (a third of the server's time at c=32, issue 9):
each request went out in two sends and every pooled connection was polled on every call. Here a
request is one write, the reply is parsed in C as it arrives, and a pooled connection closed by
the server is known from its `connection_lost`, with no poll. Errors are httpx's own types
(ConnectError, ConnectTimeout, ReadTimeout, RemoteProtocolError, ReadError), so the retry rules
and messages of forward.py and relay.py are unchanged, but for one: a pooled connection the
server closed before any byte of the reply is a `StaleConnection`, the only disconnect that
forward.py sends again (any other may have reached the provider, and been billed).

At most `max_connections` connections per origin are open (busy or idle; slots.py counts them);
a call waits for one up to its `pool` timeout, then fails with httpx.PoolTimeout. A connection is
busy from the request to the close of its response (read to the end, closed early, failed or
cancelled).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, cast

import httptools
import httpx

from tether.gateway.llm.slots import Slots

# reply bytes buffered before reading pauses (a stream relayed to a slow client)
HIGH_WATER = 1 << 20
_Key = tuple[bytes, str, int]
_FRAMING = (b"content-length", b"transfer-encoding")


class StaleConnection(httpx.RemoteProtocolError):
    """A keep-alive connection taken from the pool that the server closed before sending any
    byte of the reply (the race with its idle timeout): the call may be sent again. Never raised
    for a fresh connection, nor once a byte came back: then the provider may have the call."""


class _Conn(asyncio.Protocol):
    """One connection to an upstream; one exchange at a time, then back to the pool."""

    def __init__(self, pool: LeanTransport, key: _Key) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.active = False
        self.reused = False  # taken from the pool (else opened for this exchange)
        self.dirty = False  # the parser is mid-message (a HEAD reply's announced body)
        self._reset()

    def _reset(self) -> None:
        if self.dirty:
            self.parser = httptools.HttpResponseParser(self)
            self.dirty = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.head_done = False
        self.until_eof = False
        self.complete = False
        self.keep = False
        self.head_only = False  # a reply to HEAD: no body, whatever its head announces
        self.got_bytes = False
        self.extra = False  # bytes after the complete reply: the connection is unusable
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.active or self.complete:
            # bytes nobody asked for: the connection cannot be trusted (they are not parsed)
            self.keep = False
            self.close()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.complete:
                self._fail(httpx.RemoteProtocolError(f"malformed HTTP reply: {exc}"))
            self.extra = True
        if self.extra:
            self.keep = False
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if not self.active or self.complete:
            return
        if self.head_done and self.until_eof and exc is None:
            self.complete = True  # a body delimited by the end of the connection
            self._wake()
        elif self.reused and not self.got_bytes:
            why = "" if exc is None else f" ({exc or type(exc).__name__})"
            self._fail(StaleConnection(f"Server disconnected without sending a response{why}."))
        elif exc is not None:
            self._fail(httpx.ReadError(str(exc) or type(exc).__name__))
        elif self.head_done:
            self._fail(httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body"))  # fmt: skip
        else:
            self._fail(httpx.RemoteProtocolError("Server disconnected without sending a response."))

    # ------------------------------------------------------------ httptools callbacks

    # once the reply is complete, whatever the parser still reports is extra bytes

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # informational: the real head follows
            self.headers = []
            return
        self.status = status
        self.head_done = True
        if self.head_only:  # complete now; the parser would wait for the announced body
            self.complete = True
            self.keep = self.parser.should_keep_alive()
            self.dirty = True
        else:
            framed = any(n.lower() in _FRAMING for n, _ in self.headers)
            self.until_eof = not framed and status not in (204, 304)
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.extra = True
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:  # the end of an informational reply
            return
        if self.complete:
            if self.head_only and not self.extra:
                self.dirty = False  # the parser agreed: no body (content-length: 0)
            return
        self.complete = True
        self.keep = self.parser.should_keep_alive()
        self._wake()

    # ------------------------------------------------------------ the exchange

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        self.error = exc
        self._wake()

    async def wait(self, timeout: float | None) -> None:
        """Until the reply moves on (head, body, end or failure); raises on failure."""
        if self.error is not None:
            raise self.error
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.waiter = fut
        timer = None if timeout is None else loop.call_later(timeout, _expire, fut, timeout)
        try:
            await fut
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()
        if self.error is not None:
            raise self.error

    def take(self) -> bytes:
        data = b"".join(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(fut: asyncio.Future[None], timeout: float) -> None:
    if not fut.done():
        fut.set_exception(httpx.ReadTimeout(f"no reply data for {timeout} s"))


class _Body(httpx.AsyncByteStream):
    """A reply's body as it arrives; the connection goes back to the pool once it is read."""

    def __init__(self, conn: _Conn, read_timeout: float | None, slots: Slots) -> None:
        self.conn = conn
        self.read_timeout = read_timeout
        self.slots = slots
        self.done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self.conn
        try:
            while True:
                if conn.chunks:
                    yield conn.take()
                elif conn.complete:
                    break
                else:
                    await conn.wait(self.read_timeout)
        except BaseException:
            self._release()
            raise
        self._release()

    async def aclose(self) -> None:
        self._release()

    def _release(self) -> None:
        if self.done:
            return
        self.done = True
        conn = self.conn
        conn.active = False
        if conn.complete and conn.keep and not conn.closed and not conn.chunks:
            conn.pool.put(conn)
        else:
            conn.close()
        self.slots.give()  # after put: the next in line finds the connection idle


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive: up to `max_connections` open connections per origin, of which
    up to `max_keepalive` idle ones."""

    def __init__(self, *, max_connections: int = 256, max_keepalive: int = 256,
                 keepalive_expiry: float = 30.0) -> None:  # fmt: skip
        self.max_connections = max_connections
        self._slots: dict[_Key, Slots] = {}
        self.max_keepalive = max_keepalive
        self.keepalive_expiry = keepalive_expiry
        self._idle: dict[_Key, list[_Conn]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        url = request.url
        https = url.raw_scheme == b"https"
        key: _Key = (url.raw_scheme, url.host, url.port or (443 if https else 80))
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        headers = request.headers.raw
        if not any(k.lower() == b"content-length" for k, _ in headers):
            headers = [(k, v) for k, v in headers if k.lower() != b"transfer-encoding"]
            headers.append((b"Content-Length", str(len(body)).encode()))
        head = b"".join([request.method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\n",
                         *(k + b": " + v + b"\r\n" for k, v in headers), b"\r\n"])  # fmt: skip
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = Slots(self.max_connections)
        await slots.take(timeouts.get("pool"), request)
        read_timeout = timeouts.get("read")
        conn: _Conn | None = None
        try:
            conn = await self._acquire(key, timeouts.get("connect"), request)
            conn.active = True
            conn.head_only = request.method == "HEAD"
            assert conn.transport is not None
            conn.transport.write(head + body)
            while not conn.head_done:
                await conn.wait(read_timeout)
        except BaseException:
            if conn is not None:
                conn.active = False
                conn.close()
            slots.give()
            raise
        stream = _Body(conn, read_timeout, slots)
        return httpx.Response(conn.status, headers=conn.headers, stream=stream,
                              extensions={"http_version": b"HTTP/1.1"})  # fmt: skip

    async def _acquire(self, key: _Key, connect_timeout: float | None,
                       request: httpx.Request) -> _Conn:  # fmt: skip
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if now - conn.idle_since > self.keepalive_expiry:
                conn.close()
                continue
            conn.reused = True
            return conn
        return await self._connect(key, connect_timeout, request)

    async def _connect(self, key: _Key, timeout: float | None, request: httpx.Request) -> _Conn:
        scheme, host, port = key
        context = self._ssl_context() if scheme == b"https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Conn(self, key), host, port, ssl=context,
                    server_hostname=host if context is not None else None,
                )  # fmt: skip
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection in {timeout} s", request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:  # certifi's roots, as httpx verifies by default
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    def put(self, conn: _Conn) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self.max_keepalive:
            conn.close()
            return
        conn._reset()
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def forget(self, conn: _Conn) -> None:
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
