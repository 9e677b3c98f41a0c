"""A lean Redis client for the budget ledger's two hot script calls (reserve, settle): one
connection per event loop that every concurrent call shares, pipelined, replies matched to
callers in order as they arrive (asyncio.Protocol, RESP2). redis-py does everything else.

Why: redis-py's asyncio client spent 100-130 us of CPU per EVALSHA here (pool checkout, retry
wrapper, command packing, a parser object per reply), more than the script itself; this costs
about a quarter of that. Plain TCP and Unix sockets only: `LeanRedis.of(client)` is None for a
client that needs TLS or a credential provider, and the ledger then calls redis-py.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any

_CRLF = b"\r\n"
_INCOMPLETE = object()


class RedisReplyError(Exception):
    """Redis answered with an error (`-ERR ...`, `-NOSCRIPT ...`)."""


class _Conn(asyncio.Protocol):
    """One connection: requests written in order, each reply resolving the oldest waiter."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.lost = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream's: write, abort

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        at = 0
        while self.waiters:
            try:
                value, end = _parse(buf, at)
            except (ValueError, ConnectionError):  # not RESP: this connection is of no use
                assert self.transport is not None
                self.transport.abort()
                return
            if value is _INCOMPLETE:
                break
            at = end
            fut = self.waiters.popleft()
            if not fut.done():
                if isinstance(value, RedisReplyError):
                    fut.set_exception(value)
                else:
                    fut.set_result(value)
        if at:
            del buf[:at]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.closed.done():
            self.closed.set_result(None)
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError(f"Redis connection lost: {exc or 'closed'}"))

    def send(self, payload: bytes) -> asyncio.Future[Any]:
        assert self.transport is not None
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        self.transport.write(payload)
        return fut

    @property
    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()


class LeanRedis:
    """`evalsha()` over one shared connection of this event loop (made on first use, made again
    after it was lost). `aclose()` closes it."""

    def __init__(self, *, host: str | None = None, port: int = 6379, path: str | None = None,
                 db: int = 0, username: str | None = None, password: str | None = None,
                 connect_timeout: float = 5.0) -> None:  # fmt: skip
        self.host, self.port, self.path = host, port, path
        self.db, self.username, self.password = db, username, password
        self.connect_timeout = connect_timeout
        self._conn: _Conn | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Future[_Conn] | None = None
        self._keeper: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, client: Any) -> LeanRedis | None:
        """The same server, database and credentials as a `redis.asyncio.Redis` client; None
        when this client cannot speak for it (TLS, a credential provider, another class)."""
        from redis.asyncio.connection import Connection, UnixDomainSocketConnection

        pool = getattr(client, "connection_pool", None)
        if pool is None:
            return None
        kw = pool.connection_kwargs
        if kw.get("credential_provider") is not None:
            return None
        common = {"db": int(kw.get("db") or 0), "username": kw.get("username"),
                  "password": kw.get("password"),
                  "connect_timeout": float(kw.get("socket_connect_timeout") or 5.0)}  # fmt: skip
        if pool.connection_class is Connection:
            return cls(host=kw.get("host", "localhost"), port=int(kw.get("port", 6379)), **common)
        if pool.connection_class is UnixDomainSocketConnection:
            return cls(path=kw["path"], **common)
        return None

    async def evalsha(self, sha: str, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The script's reply; loads it (EVAL) when Redis does not know it (a restart, a flush).

        Sent once more on a fresh connection when the connection was lost before the reply:
        the ledger's scripts recognise a second delivery of the same call."""
        tail = [str(len(keys)), *keys, *args]
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                try:
                    return await conn.send(_pack(["EVALSHA", sha, *tail]))
                except RedisReplyError as exc:
                    if not str(exc).startswith("NOSCRIPT"):
                        raise
                    return await conn.send(_pack(["EVAL", script, *tail]))
            except ConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _connection(self) -> _Conn:
        loop = asyncio.get_running_loop()
        conn = self._conn
        if conn is not None and conn.usable and self._loop is loop:
            return conn
        if self._connecting is not None and self._loop is loop:
            return await asyncio.shield(self._connecting)
        if conn is not None and self._loop is loop and conn.transport is not None:
            conn.transport.abort()
        self._loop, self._conn = loop, None
        self._connecting = loop.create_future()
        try:
            conn = await asyncio.wait_for(self._open(loop), self.connect_timeout)
        except BaseException as exc:
            self._connecting.set_exception(
                exc if isinstance(exc, Exception) else ConnectionError("connect cancelled")
            )
            self._connecting.exception()  # retrieved: no "never retrieved" warning
            self._connecting = None
            raise
        self._conn = conn
        self._keeper = loop.create_task(_keep(conn))
        self._connecting.set_result(conn)
        self._connecting = None
        return conn

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Conn:
        if self.path is not None:
            _, conn = await loop.create_unix_connection(_Conn, self.path)
        else:
            _, conn = await loop.create_connection(_Conn, self.host or "localhost", self.port)
        try:
            if self.password is not None:
                auth = [self.password] if self.username is None else [self.username, self.password]
                await conn.send(_pack(["AUTH", *auth]))
            if self.db:
                await conn.send(_pack(["SELECT", self.db]))
        except BaseException:
            assert conn.transport is not None
            conn.transport.abort()
            raise
        return conn

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.transport is None or conn.transport.is_closing():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            conn.transport.close()


async def _keep(conn: _Conn) -> None:
    """Closes the connection when its loop shuts down (asyncio.run and pytest's runners cancel
    every task then), for an owner that never called aclose()."""
    try:
        await conn.closed
    finally:
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.close()


def _pack(parts: Sequence[Any]) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        if isinstance(p, bytes):
            b = p
        elif isinstance(p, str):
            b = p.encode()
        elif isinstance(p, int):
            b = b"%d" % p
        else:
            raise TypeError(f"cannot send a {type(p).__name__} to Redis")
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _parse(buf: bytearray, at: int) -> tuple[Any, int]:
    """One RESP2 reply from buf[at:]: (value, end), or (_INCOMPLETE, at)."""
    nl = buf.find(_CRLF, at)
    if nl < 0:
        return _INCOMPLETE, at
    kind, line = buf[at], bytes(buf[at + 1 : nl])
    end = nl + 2
    if kind == 0x3A:  # ':' integer
        return int(line), end
    if kind == 0x24:  # '$' bulk string
        n = int(line)
        if n < 0:
            return None, end
        if len(buf) < end + n + 2:
            return _INCOMPLETE, at
        return bytes(buf[end : end + n]), end + n + 2
    if kind == 0x2A:  # '*' array
        n = int(line)
        if n < 0:
            return None, end
        items = []
        for _ in range(n):
            value, end = _parse(buf, end)
            if value is _INCOMPLETE:
                return _INCOMPLETE, at
            items.append(value)
        return items, end
    if kind == 0x2B:  # '+' simple string
        return line.decode(), end
    if kind == 0x2D:  # '-' error
        return RedisReplyError(line.decode(errors="replace")), end
    raise ValueError(f"unexpected reply from Redis: {bytes(buf[at : at + 40])!r}")


__all__ = ["LeanRedis", "RedisReplyError"]
