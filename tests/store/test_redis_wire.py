"""The Redis ledger's lean client (store/redis_wire.py) against the real Redis: replies matched to
concurrent callers, a script Redis forgot, a connection lost before the reply (the reserve sent
again must not hold twice), and which clients it can speak for."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio
from sqlalchemy import Engine

from tests.conftest import REDIS_URL
from tether.core.budget import ScopeCap
from tether.store.redis_ledger import RedisLedger
from tether.store.redis_wire import LeanRedis, RedisReplyError

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
USD = 1_000_000_000


@pytest.fixture
def prefix() -> Iterator[str]:
    p = f"w{uuid.uuid4().hex[:10]}:"
    yield p
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(p + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def rclient() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def test_concurrent_calls_get_their_own_replies(rclient: redis.asyncio.Redis) -> None:
    lean = LeanRedis.of(rclient)
    assert lean is not None
    script = "return {tonumber(ARGV[1]), KEYS[1], redis.status_reply('ok')}"
    sha = await rclient.script_load(script)
    try:
        got = await asyncio.gather(
            *(lean.evalsha(sha, script, [f"k{i}"], [i]) for i in range(200))
        )  # fmt: skip
        assert got == [[i, f"k{i}".encode(), "ok"] for i in range(200)]
        failing = "return redis.error_reply('boom')"
        with pytest.raises(RedisReplyError, match="boom"):
            await lean.evalsha(rclient.register_script(failing).sha, failing, [], [])
    finally:
        await lean.aclose()


async def test_a_script_redis_forgot_is_loaded_again(rclient: redis.asyncio.Redis) -> None:
    lean = LeanRedis.of(rclient)
    assert lean is not None
    script = f"return '{uuid.uuid4().hex}'"  # a script Redis has never seen
    sha = rclient.register_script(script).sha
    try:
        first = await lean.evalsha(sha, script, [], [])
        assert await lean.evalsha(sha, script, [], []) == first  # by its SHA this time
    finally:
        await lean.aclose()


async def test_a_connection_closed_by_the_server_is_made_again(
    rclient: redis.asyncio.Redis,
) -> None:
    lean = LeanRedis.of(rclient)
    assert lean is not None
    try:
        sha = await rclient.script_load("return 7")
        assert await lean.evalsha(sha, "return 7", [], []) == 7
        # this connection only: Redis is shared with the other worker's tests and servers
        assert lean._conn is not None and lean._conn.transport is not None
        host, port = lean._conn.transport.get_extra_info("sockname")[:2]
        assert await rclient.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}") == 1
        await asyncio.sleep(0.05)
        assert await lean.evalsha(sha, "return 7", [], []) == 7
    finally:
        await lean.aclose()


class DropFirstReply:
    """A TCP proxy to Redis that forwards the first connection's first request and closes
    that connection before Redis's reply reaches the client: the client cannot tell whether
    the command ran. Later connections are relayed as they are."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.dropped = 0

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *_: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(self.host, self.port)
        try:
            if not self.dropped:
                self.dropped = 1
                up_w.write(await reader.read(65536))  # the whole (small) request
                await up_w.drain()
                await up_r.read(65536)  # Redis ran it and replied: the reply is lost
                return

            async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()

            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        except ConnectionError:
            pass
        finally:
            writer.close()
            up_w.close()


async def test_a_reserve_whose_reply_was_lost_holds_once(
    db: Engine, rclient: redis.asyncio.Redis, prefix: str
) -> None:
    """The reserve is sent again on a new connection; its script recognises the hold it made
    the first time, so the scope is held once (else its room would shrink for good)."""
    parts = urlsplit(REDIS_URL)
    seeded = RedisLedger(rclient, db, prefix=prefix)
    caps = [ScopeCap("run:run_w", USD)]
    # the counter exists first, so that the proxied reserve is a single script call
    await seeded.settle(
        await seeded.reserve(caps, amount_nusd=1, tokens=0, run_id="run_w", now=NOW),
        actual_nusd=1, actual_tokens=0, now=NOW,
    )  # fmt: skip
    await rclient.script_load(seeded._reserve.script)
    proxy = DropFirstReply(parts.hostname or "127.0.0.1", parts.port or 6379)
    async with proxy as port:
        via = redis.asyncio.Redis(host="127.0.0.1", port=port, db=int(parts.path[1:] or 0))
        ledger = RedisLedger(via, db, prefix=prefix)
        try:
            r = await ledger.reserve(caps, amount_nusd=300_000_000, tokens=5, run_id="run_w",
                                     now=NOW)  # fmt: skip
        finally:
            await ledger.aclose()
            await via.aclose()
    assert proxy.dropped == 1
    snap = await seeded.snapshot("run:run_w")
    assert snap is not None
    assert (snap[1].reserved_nusd, snap[1].reserved_tokens, snap[1].calls) == (300_000_000, 5, 2)
    await seeded.settle(r, actual_nusd=0, actual_tokens=0, now=NOW)
    snap = await seeded.snapshot("run:run_w")
    assert snap is not None and snap[1].reserved_nusd == 0


def test_which_clients_it_speaks_for() -> None:
    lean = LeanRedis.of(redis.asyncio.Redis.from_url("redis://u:pw@127.0.0.2:6390/3"))
    assert lean is not None
    assert (lean.host, lean.port, lean.db, lean.username, lean.password) == (
        "127.0.0.2", 6390, 3, "u", "pw")  # fmt: skip
    unix = LeanRedis.of(redis.asyncio.Redis.from_url("unix:///run/redis.sock?db=2"))
    assert unix is not None and (unix.path, unix.db) == ("/run/redis.sock", 2)
    assert LeanRedis.of(redis.asyncio.Redis.from_url("rediss://h:6380/0")) is None
