"""Keep-alive HTTP/1.1 connections to tether for the saver's per-super-step calls (`put`,
`put_writes`, `get_tuple`): a request is one write of bytes built here and one read of the reply.

httpx spends ~0.4 ms of CPU a request on its models, URL handling and connection pool (posting
1.5 KB to bench/echo_app.py under uvicorn on the 2-CPU bench machine: 0.57 ms of CPU and 0.65 ms
p50 a request with httpx, 0.15 ms and 0.21 ms with http.client), as much as tether's own work
on a put. The sync side is the standard library's
http.client; the async side reads and writes asyncio streams itself. Idle connections are kept
(one per concurrent caller) and reused; a reused one the server has closed in the meantime is
dropped and the request sent once more on a new connection (the three calls are idempotent:
upserts of the same values and a read).

The connections go straight to tether: when a proxy applies to tether's URL (`HTTP(S)_PROXY`,
`ALL_PROXY`, not bypassed by `NO_PROXY`) the saver sends these calls through httpx like the
others (`Target.direct`). TLS verifies as httpx does (`httpx.create_ssl_context()`: certifi's
bundle, or `SSL_CERT_FILE`/`SSL_CERT_DIR`), one context for every connection.
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import threading
import urllib.request
from functools import cached_property
from urllib.parse import urlsplit

import httpx

Reply = tuple[int, bytes]

# what a reused connection that the server closed meanwhile raises (RemoteDisconnected is a
# ConnectionResetError): the request never reached the server, or it is answered again
_STALE = (ConnectionError, http.client.BadStatusLine, asyncio.IncompleteReadError)


class Target:
    """Where the requests go: scheme, host, port, the path prefix and the fixed headers."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(base_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        netloc = self.host if parts.port is None else f"{self.host}:{parts.port}"
        self.headers = {"Host": netloc, **headers, "Accept": "application/json"}

    @property
    def direct(self) -> bool:
        """No proxy applies to tether's URL (read from the environment as httpx reads it)."""
        proxies = urllib.request.getproxies_environment()
        if not (proxies.get("https" if self.tls else "http") or proxies.get("all")):
            return True
        return bool(urllib.request.proxy_bypass(self.host))  # NO_PROXY

    @cached_property
    def tls_context(self) -> ssl.SSLContext | None:
        return httpx.create_ssl_context() if self.tls else None

    def head(self, method: str, path: str, body: bytes | None) -> bytes:
        """The request line and headers, ready to write."""
        lines = [f"{method} {self.prefix}{path} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class SyncWire:
    """http.client connections, one per thread in flight; safe to share between threads."""

    def __init__(self, target: Target, timeout_s: float) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connect(self) -> http.client.HTTPConnection:
        t = self.target
        if t.tls:
            return http.client.HTTPSConnection(t.host, t.port, timeout=self.timeout_s,
                                               context=t.tls_context)  # fmt: skip
        return http.client.HTTPConnection(t.host, t.port, timeout=self.timeout_s)

    def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        for attempt in (1, 2):
            with self._lock:
                conn = self._idle.pop() if self._idle and attempt == 1 else None
            reused = conn is not None
            conn = conn or self._connect()
            try:
                # one write: http.client sends the headers and a body given here together
                conn.putrequest(method, self.target.prefix + path, skip_host=True,
                                skip_accept_encoding=True)  # fmt: skip
                for k, v in self.target.headers.items():
                    conn.putheader(k, v)
                if body is not None:
                    conn.putheader("Content-Type", "application/json")
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                resp = conn.getresponse()
                while 100 <= resp.status < 200:  # an interim reply (103 Early Hints; http.client
                    resp.headers = None  # type: ignore[assignment]  # skips only 100): begin()
                    resp.begin()  # again reads the real reply from the same buffered stream
                data = resp.read()
            except _STALE:
                conn.close()
                if reused:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if resp.will_close:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)
            return resp.status, data
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class AsyncWire:
    """asyncio stream connections of one event loop, one per request in flight."""

    def __init__(self, target: Target, timeout_s: float) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        payload = self.target.head(method, path, body) + (body or b"")
        async with asyncio.timeout(self.timeout_s):
            for attempt in (1, 2):
                reused = bool(self._idle) and attempt == 1
                if reused:
                    reader, writer = self._idle.pop()
                else:
                    reader, writer = await asyncio.open_connection(
                        self.target.host, self.target.port, ssl=self.target.tls_context
                    )
                try:
                    writer.write(payload)
                    status, data, keep = await _read_reply(reader, method)
                except _STALE:
                    writer.close()
                    if reused:
                        continue
                    raise
                except BaseException:
                    writer.close()
                    raise
                if keep:
                    self._idle.append((reader, writer))
                else:
                    writer.close()
                return status, data
        raise AssertionError("unreachable")

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()


async def _read_reply(reader: asyncio.StreamReader, method: str) -> tuple[int, bytes, bool]:
    """Status, body and whether the connection stays open, of one HTTP/1.1 reply."""
    status = 100
    while 100 <= status < 200:  # an interim reply (100 Continue, 103 Early Hints): the next
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        version, code, *_ = status_line.split(" ", 2)
        status = int(code)
    fields: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    keep = version == "HTTP/1.1" and fields.get("connection", "").lower() != "close"
    if method == "HEAD" or status in (204, 304):
        return status, b"", keep
    if fields.get("transfer-encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers from tether
                return status, b"".join(parts), keep
            parts.append((await reader.readexactly(size + 2))[:-2])
    if "content-length" in fields:
        return status, await reader.readexactly(int(fields["content-length"])), keep
    return status, await reader.read(), False  # until the server closes


__all__ = ["AsyncWire", "Reply", "SyncWire", "Target"]
