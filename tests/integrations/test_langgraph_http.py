"""The saver's keep-alive HTTP/1.1 connections (integrations/langgraph/_http.py), sync and async,
against a real HTTP/1.1 server of the standard library: one connection reused, a connection the
server dropped while idle replaced without the caller noticing, chunked and empty replies; the
async saver's connections closed with the event loop that opened them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tether.integrations.langgraph import TetherSaver
from tether.integrations.langgraph._http import AsyncWire, SyncWire, Target


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peers: list[tuple[str, int]] = []
    closed: list[tuple[str, int]] = []  # connections the client ended

    def log_message(self, *args: object) -> None:
        pass

    def finish(self) -> None:
        super().finish()
        self.closed.append(self.client_address)

    def do_GET(self) -> None:
        self.answer(b"")

    def do_POST(self) -> None:
        self.answer(self.rfile.read(int(self.headers["Content-Length"])))

    def answer(self, body: bytes) -> None:
        self.peers.append(self.client_address)
        path = self.path.removeprefix("/api/v1")
        if path == "/empty":
            self.send_response(204)
            self.end_headers()
            return
        if path == "/early":  # an interim reply before the real one
            self.send_response_only(103)
            self.send_header("Link", "</style.css>; rel=preload")
            self.end_headers()
        if path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"a":', b" 1}"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        reply = b"%s %s %s" % (self.command.encode(), path.encode(), body)
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
        if path == "/drop":  # closed after the reply, without saying so: a stale keep-alive
            self.close_connection = True


@pytest.fixture
def target() -> Iterator[Target]:
    Handler.peers, Handler.closed = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Target(f"http://127.0.0.1:{server.server_address[1]}/api/v1", {"X-Test": "1"})
    server.shutdown()
    server.server_close()


def test_sync_reuses_one_connection_and_replaces_a_dropped_one(target: Target) -> None:
    wire = SyncWire(target, timeout_s=10)
    assert wire.request("POST", "/a", b'{"x":1}') == (200, b'POST /a {"x":1}')
    assert wire.request("GET", "/b?q=1") == (200, b"GET /b?q=1 ")
    assert len(set(Handler.peers)) == 1  # one keep-alive connection
    assert wire.request("POST", "/drop", b"{}") == (200, b"POST /drop {}")
    assert wire.request("POST", "/c", b"{}") == (200, b"POST /c {}")  # sent again, new socket
    assert len(set(Handler.peers)) == 2
    assert wire.request("GET", "/empty") == (204, b"")
    assert wire.request("GET", "/chunked") == (200, b'{"a": 1}')
    wire.close()


def test_sync_is_shared_by_threads(target: Target) -> None:
    wire = SyncWire(target, timeout_s=10)
    out: list[tuple[int, bytes]] = []

    def work(i: int) -> None:
        for j in range(20):
            out.append(wire.request("POST", f"/{i}", str(j).encode()))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == sorted(
        (200, f"POST /{i} {j}".encode()) for i in range(4) for j in range(20)
    )
    assert len(set(Handler.peers)) <= 4
    wire.close()


def test_async_reuses_one_connection_and_replaces_a_dropped_one(target: Target) -> None:
    async def main() -> None:
        wire = AsyncWire(target, timeout_s=10)
        assert await wire.request("POST", "/a", b'{"x":1}') == (200, b'POST /a {"x":1}')
        assert await wire.request("GET", "/b") == (200, b"GET /b ")
        assert len(set(Handler.peers)) == 1
        assert await wire.request("POST", "/drop", b"{}") == (200, b"POST /drop {}")
        assert await wire.request("POST", "/c", b"{}") == (200, b"POST /c {}")
        assert len(set(Handler.peers)) == 2
        assert await wire.request("GET", "/empty") == (204, b"")
        assert await wire.request("GET", "/chunked") == (200, b'{"a": 1}')
        both = await asyncio.gather(wire.request("GET", "/x"), wire.request("GET", "/y"))
        assert both == [(200, b"GET /x "), (200, b"GET /y ")]
        await wire.close()

    asyncio.run(main())


def test_a_server_that_is_gone_raises(target: Target) -> None:
    wire = SyncWire(Target("http://127.0.0.1:9/api/v1", {}), timeout_s=5)
    with pytest.raises(ConnectionError):
        wire.request("GET", "/a")


def test_an_interim_reply_is_skipped_for_the_real_one(target: Target) -> None:
    async def main() -> None:
        wire = AsyncWire(target, timeout_s=10)
        assert await wire.request("GET", "/early") == (200, b"GET /early ")
        assert await wire.request("GET", "/next") == (200, b"GET /next ")  # not the 103's reply
        await wire.close()

    asyncio.run(main())
    assert SyncWire(target, timeout_s=10).request("GET", "/early") == (200, b"GET /early ")


def test_through_a_proxy_the_step_calls_go_where_the_others_go(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the fixture's server stands in for the proxy: a proxied request names the whole URL
    monkeypatch.setenv("HTTP_PROXY", f"http://{target.host}:{target.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    saver = TetherSaver("http://tether.invalid:8080", api_key="k")
    try:
        status, body = saver._step_call("GET", "/threads/t/checkpoint")
        assert (status, body) == (
            200,
            b"GET http://tether.invalid:8080/api/v1/threads/t/checkpoint ",
        )
    finally:
        saver.close()
    monkeypatch.setenv("NO_PROXY", "tether.invalid")
    assert TetherSaver("http://tether.invalid:8080")._wire is not None  # bypassed: direct


def _eventually(check: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not within the bound"
        time.sleep(0.02)


def test_each_event_loops_connections_are_closed_as_that_loop_ends(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lean wire's connection and httpx's belong to the loop that opened them: when
    asyncio.run() ends that loop they are closed there, not left open for the next loop to drop."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    saver = TetherSaver(f"http://{target.host}:{target.port}", api_key="k")

    async def calls() -> None:
        assert await saver._astep_call("GET", "/a") == (200, b"GET /a ")  # the lean wire
        assert (await saver._acall("GET", "/b")).status_code == 200  # httpx
        assert len(set(Handler.peers) - set(Handler.closed)) == 2  # both open meanwhile

    try:
        asyncio.run(calls())
        first = set(Handler.peers)
        assert len(first) == 2
        _eventually(lambda: first <= set(Handler.closed))
        asyncio.run(calls())  # a new loop: new connections, closed in turn
        _eventually(lambda: set(Handler.peers) <= set(Handler.closed))
        assert len(set(Handler.peers)) == 4

        async def closed_by_aclose() -> None:
            await saver._astep_call("GET", "/c")
            await saver.aclose()
            deadline = time.monotonic() + 30
            while not set(Handler.peers) <= set(Handler.closed):  # closed while the loop runs
                assert time.monotonic() < deadline, "aclose() left a connection open"
                await asyncio.sleep(0.02)
            await saver._astep_call("GET", "/d")  # usable again: a new connection

        asyncio.run(closed_by_aclose())
        _eventually(lambda: set(Handler.peers) <= set(Handler.closed))
        assert len(set(Handler.peers)) == 6
    finally:
        saver.close()
