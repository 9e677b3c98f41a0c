"""Sliding-window rate limits: correct across two engines (as two server processes have) on
SQLite and PostgreSQL, and across two Redis clients."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import Engine

from tests.conftest import REDIS_URL
from tether.core.policy import Decision, RateLimit
from tether.store.engine import make_engine
from tether.store.ratelimit import (
    RateLimiter,
    RedisRateLimiter,
    StoreRateLimiter,
    enforce,
    make_limiter,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


def window_semantics(limiter: RateLimiter, key: str) -> None:
    assert limiter.check_and_record(key, 3, 60, T0) == (True, None)
    assert limiter.check_and_record(key, 3, 60, T0 + timedelta(seconds=10))[0]
    assert limiter.check_and_record(key, 3, 60, T0 + timedelta(seconds=20))[0]
    allowed, retry = limiter.check_and_record(key, 3, 60, T0 + timedelta(seconds=30))
    assert not allowed and retry == pytest.approx(30.0)
    # a refused call is not counted: the first call leaves the window at T0+60
    assert limiter.check_and_record(key, 3, 60, T0 + timedelta(seconds=60))[0]
    allowed, retry = limiter.check_and_record(key, 3, 60, T0 + timedelta(seconds=61))
    assert not allowed and retry == pytest.approx(9.0)
    # other keys are independent
    assert limiter.check_and_record(key + "-other", 1, 60, T0 + timedelta(seconds=61))[0]


def test_store_window(db: Engine) -> None:
    window_semantics(StoreRateLimiter(db), "tool:a:mail.send")


def test_redis_window(redis_client: redis.Redis) -> None:
    window_semantics(RedisRateLimiter(redis_client, prefix="test:rl:"), f"test:{uuid.uuid4().hex}")


def hammer(limiters: list[RateLimiter], key: str, per_worker: int) -> int:
    """Threads on every limiter race for a limit of 10 at the same instant; returns admitted."""
    admitted: list[bool] = []
    lock = threading.Lock()

    def worker(limiter: RateLimiter) -> None:
        for _ in range(per_worker):
            ok, _ = limiter.check_and_record(key, 10, 3600, T0)
            with lock:
                admitted.append(ok)

    threads = [threading.Thread(target=worker, args=(lim,)) for lim in limiters for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == len(limiters) * 3 * per_worker
    return sum(admitted)


def test_two_engines_never_admit_more_than_the_limit(db: Engine, db_url: str) -> None:
    other = make_engine(db_url)
    try:
        assert hammer([StoreRateLimiter(db), StoreRateLimiter(other)], "tool:a:x", 5) == 10
    finally:
        other.dispose()


def test_two_redis_clients_never_admit_more_than_the_limit(redis_client: redis.Redis) -> None:
    second = redis.Redis.from_url(REDIS_URL)
    try:
        key = f"test:{uuid.uuid4().hex}"
        assert (
            hammer(
                [
                    RedisRateLimiter(redis_client, prefix="test:rl:"),
                    RedisRateLimiter(second, prefix="test:rl:"),
                ],
                key,
                5,
            )
            == 10
        )
    finally:
        second.close()


def test_enforce_turns_full_windows_into_rate_limited(
    db: Engine, redis_client: redis.Redis
) -> None:
    assert isinstance(make_limiter(db), StoreRateLimiter)
    assert isinstance(make_limiter(db, redis_client), RedisRateLimiter)
    limiter = make_limiter(db)
    limit = RateLimit(1, 60, "1/minute")
    decision = Decision("allow", 'tools[0] match "x.*"', "ok", rate_limit=limit)
    assert enforce(limiter, decision, "a", "x.y", T0) is decision
    limited = enforce(limiter, decision, "a", "x.y", T0 + timedelta(seconds=15))
    assert limited.outcome == "rate_limited" and limited.retry_after_s == pytest.approx(45.0)
    assert limited.rule == 'tools[0] match "x.*" rate_limit 1/minute'
    denied = Decision("deny", "r", "no", rate_limit=RateLimit(1, 60, "1/minute"))
    assert enforce(limiter, denied, "a", "x.y", T0) is denied
    unlimited = Decision("allow", "r", "ok")
    assert enforce(limiter, unlimited, "a", "x.y", T0) is unlimited


_WORKER = """
import sys
from datetime import datetime, timezone
import redis
from tether.store.engine import make_engine
from tether.store.ratelimit import RedisRateLimiter, StoreRateLimiter
db_url, redis_url, key = sys.argv[1:4]
now = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
for limiter in (StoreRateLimiter(make_engine(db_url)),
                RedisRateLimiter(redis.Redis.from_url(redis_url), prefix="test:rl:")):
    print(sum(limiter.check_and_record(key, 7, 3600, now)[0] for _ in range(10)))
"""


def test_two_processes_share_one_window(db: Engine, db_url: str) -> None:
    import subprocess
    import sys

    key = f"test:{uuid.uuid4().hex}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, db_url, REDIS_URL, key],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    store_admitted = sum(int(out[0]) for out in outputs)
    redis_admitted = sum(int(out[1]) for out in outputs)
    assert (store_admitted, redis_admitted) == (7, 7)
