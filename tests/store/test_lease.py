from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from tether.store import lease

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_one_holder_until_expiry_then_anyone(db: Engine) -> None:
    assert lease.acquire(db, "job", "a", ttl_s=60, now=T0)
    assert not lease.acquire(db, "job", "b", ttl_s=60, now=T0 + timedelta(seconds=30))
    assert lease.acquire(db, "job", "a", ttl_s=60, now=T0 + timedelta(seconds=50))  # renewed
    assert not lease.acquire(db, "job", "b", ttl_s=60, now=T0 + timedelta(seconds=100))
    assert lease.holder_of(db, "job", now=T0 + timedelta(seconds=100)) == "a"
    assert lease.acquire(db, "job", "b", ttl_s=60, now=T0 + timedelta(seconds=111))  # a expired
    assert not lease.acquire(db, "job", "a", ttl_s=60, now=T0 + timedelta(seconds=112))
    assert lease.acquire(db, "other", "a", ttl_s=60, now=T0)  # leases are independent


def test_release_hands_over_at_once(db: Engine) -> None:
    assert lease.acquire(db, "job", "a", ttl_s=60, now=T0)
    lease.release(db, "job", "b")  # not the holder: nothing happens
    assert not lease.acquire(db, "job", "b", ttl_s=60, now=T0)
    lease.release(db, "job", "a")
    assert lease.holder_of(db, "job", now=T0) is None
    assert lease.acquire(db, "job", "b", ttl_s=60, now=T0)
