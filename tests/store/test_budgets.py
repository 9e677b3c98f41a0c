"""The SQL budget books (store/budgets.py): reserve, settle, release, sweep and their races on
SQLite and PostgreSQL. The properties every ledger keeps (no overshoot under any sequence or
under concurrency) are written once in test_ledger.py and run on this ledger there too."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from tether.core.budget import ScopeCap
from tether.core.errors import BadRequestError, BudgetExceededError
from tether.store import budget_pg, budgets
from tether.store.tables import reservations

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
USD = 1_000_000_000


def _reserve(engine: Engine, caps: list[ScopeCap], amount: int, tokens: int = 0,
             rid: str = "rsv_1", ttl_s: int = 60) -> budgets.Reservation:  # fmt: skip
    return budgets.reserve(engine, caps, reservation_id=rid, amount_nusd=amount, tokens=tokens,
                           run_id="run_1", now=NOW, ttl_s=ttl_s)  # fmt: skip


def test_reserve_settle_release_keep_exact_books(db: Engine) -> None:
    caps = [ScopeCap("run:run_1", USD, 1000, 5), ScopeCap("global_day:2026-11-25", 10 * USD)]
    r1 = _reserve(db, caps, 300_000_000, 400, "rsv_a")
    r2 = _reserve(db, caps, 200_000_000, 100, "rsv_b")
    assert r1.scopes == ("global_day:2026-11-25", "run:run_1")
    s = budgets.settle(db, r1, actual_nusd=123_456_789, actual_tokens=250, now=NOW)
    assert (s.charged_nusd, s.released_nusd, s.overrun, s.was_held) == (
        123_456_789, 176_543_211, False, True)  # fmt: skip
    assert budgets.release(db, r2, now=NOW)
    for scope in r1.scopes:
        cap, st_ = budgets.snapshot(db, scope) or (None, None)
        assert st_ is not None and cap is not None
        assert (st_.spent_nusd, st_.reserved_nusd, st_.spent_tokens, st_.reserved_tokens) == (
            123_456_789, 0, 250, 0)  # fmt: skip
        assert st_.calls == 1  # the released call gave its call back
    with db.connect() as conn:
        got = dict(conn.execute(select(reservations.c.id, reservations.c.status)).all())
    assert got == {"rsv_a": "settled", "rsv_b": "released"}
    # settling twice, or releasing a settled hold, changes nothing
    assert not budgets.settle(db, r1, actual_nusd=5, actual_tokens=5, now=NOW).was_held
    assert not budgets.release(db, r1, now=NOW)
    snap = budgets.snapshot(db, "run:run_1")
    assert snap is not None and snap[1].spent_nusd == 123_456_789
    assert budgets.snapshot(db, "run:nope") is None


def test_refusal_names_the_scope_and_holds_nothing(db: Engine) -> None:
    caps = [ScopeCap("agent_day:a:2026-11-25", 5 * USD), ScopeCap("run:run_1", USD)]
    r = _reserve(db, caps, 700_000_000, rid="rsv_a")
    with pytest.raises(BudgetExceededError) as exc:
        _reserve(db, caps, 400_000_000, rid="rsv_b")
    err = exc.value
    assert err.http_status == 402 and err.type == "budget_exceeded"
    assert err.details["scope"] == "run:run_1"
    assert err.details["remaining_usd"] == pytest.approx(0.3)
    assert "run:run_1" in err.message and "$0.300000 left" in err.message
    # the agent/day scope came first and was taken, then rolled back with the refusal
    snap = budgets.snapshot(db, "agent_day:a:2026-11-25")
    assert snap is not None and (snap[1].reserved_nusd, snap[1].calls) == (700_000_000, 1)
    with db.connect() as conn:
        assert conn.execute(select(reservations.c.id)).scalars().all() == ["rsv_a"]
    budgets.settle(db, r, actual_nusd=700_000_000, actual_tokens=0, now=NOW)
    _reserve(db, caps, 300_000_000, rid="rsv_c")  # exactly what is left fits


def test_token_and_call_caps_refuse(db: Engine) -> None:
    caps = [ScopeCap("run:run_1", None, 100, 2)]
    _reserve(db, caps, 0, 60, "rsv_a")
    with pytest.raises(BudgetExceededError) as exc:
        _reserve(db, caps, 0, 41, "rsv_b")
    assert exc.value.details["remaining_tokens"] == 40
    _reserve(db, caps, 0, 40, "rsv_c")
    with pytest.raises(BudgetExceededError, match="no LLM calls left"):
        _reserve(db, caps, 0, 0, "rsv_d")
    with pytest.raises(BadRequestError):
        _reserve(db, caps, -1, 0, "rsv_e")


def test_caps_are_refreshed_from_the_current_policy(db: Engine) -> None:
    _reserve(db, [ScopeCap("run:run_1", USD)], 600_000_000, rid="rsv_a")
    with pytest.raises(BudgetExceededError):
        _reserve(db, [ScopeCap("run:run_1", 500_000_000)], 1, rid="rsv_b")
    _reserve(db, [ScopeCap("run:run_1", 2 * USD)], USD, rid="rsv_c")


def test_on_postgresql_a_hold_commits_without_waiting_for_the_wal_flush(db: Engine) -> None:
    """The reserve statement turns synchronous_commit off for its own transaction only (sent as
    the server sends it: autocommitted, in a pipeline, its transaction ending at the sync)."""
    if db.dialect.name != "postgresql":
        pytest.skip("SQLite has no asynchronous commit (WAL with synchronous=NORMAL)")
    _reserve(db, [ScopeCap("run:run_1", USD)], 1, rid="rsv_seed")
    _, stmt, values = budget_pg._params(
        db, [ScopeCap("run:run_1", USD)], [], reservation_id="rsv_async", amount_nusd=5,
        tokens=1, run_id="run_1", now=NOW, expires=NOW,
    )  # fmt: skip
    raw = db.raw_connection()
    try:
        conn: Any = raw.driver_connection
        conn.autocommit = True
        with conn.pipeline():
            conn.cursor().execute(stmt, values)
            inside = conn.cursor()
            inside.execute("SELECT current_setting('synchronous_commit')")
        setting = inside.fetchone()[0]
        after = conn.execute("SHOW synchronous_commit").fetchone()[0]
        conn.autocommit = False
    finally:
        raw.close()
    assert setting == "off" and after != "off"  # local to that transaction only
    with db.connect() as c:
        row = c.execute(select(reservations).where(reservations.c.id == "rsv_async")).one()
    assert row.scopes == ["run:run_1"] and row.amount_nusd == 5


def test_a_hold_lost_with_the_database_crash_is_charged_in_full_by_its_settle(db: Engine) -> None:
    """On PostgreSQL a hold commits asynchronously (budgets.hold_commit): a database crash may
    drop the hold row and its counter increments together. The settle still charges the call,
    once, so no spend goes unrecorded."""
    caps = [ScopeCap("run:run_1", USD), ScopeCap("agent:a:2026-11-25", 10 * USD)]
    lost = _reserve(db, caps, 800_000_000, rid="rsv_lost")
    with db.begin() as conn:  # what the crash undoes: the whole reserve transaction
        conn.execute(reservations.delete().where(reservations.c.id == "rsv_lost"))
        conn.exec_driver_sql(
            "UPDATE budget_counters SET reserved_nusd = reserved_nusd - 800000000, "
            "calls = calls - 1"
        )
    s = budgets.settle(db, lost, actual_nusd=300, actual_tokens=3, now=NOW)
    assert s.charged_nusd == 300 and not s.was_held
    budgets.settle_many(db, [(lost, 300, 3)], now=NOW)  # a second settle charges nothing
    for cap in caps:
        snap = budgets.snapshot(db, cap.scope)
        assert snap is not None
        assert (snap[1].spent_nusd, snap[1].reserved_nusd, snap[1].calls) == (300, 0, 1)


def test_sweep_releases_expired_holds_and_a_late_settle_is_still_charged(db: Engine) -> None:
    caps = [ScopeCap("run:run_1", USD)]
    old = _reserve(db, caps, 800_000_000, rid="rsv_old", ttl_s=10)
    _reserve(db, caps, 100_000_000, rid="rsv_new", ttl_s=900)
    assert budgets.sweep_expired(db, NOW + timedelta(seconds=5)) == 0
    assert budgets.sweep_expired(db, NOW + timedelta(seconds=11)) == 1
    snap = budgets.snapshot(db, "run:run_1")
    assert snap is not None and (snap[1].reserved_nusd, snap[1].calls) == (100_000_000, 1)
    s = budgets.settle(db, old, actual_nusd=50, actual_tokens=1, now=NOW)
    assert not s.was_held and s.charged_nusd == 50
    snap = budgets.snapshot(db, "run:run_1")
    assert snap is not None and (snap[1].spent_nusd, snap[1].calls) == (50, 2)
    # finished holds are dropped a day after they expire
    budgets.sweep_expired(db, NOW + timedelta(hours=2))
    with db.connect() as conn:
        left = dict(conn.execute(select(reservations.c.id, reservations.c.status)).all())
    assert left == {"rsv_old": "settled", "rsv_new": "released"}
    budgets.sweep_expired(db, NOW + timedelta(days=2))
    with db.connect() as conn:
        assert conn.execute(select(reservations.c.id)).all() == []


def test_a_scope_named_twice_is_held_once_at_its_tightest_cap(db: Engine) -> None:
    caps = [ScopeCap("run:run_1", USD), ScopeCap("run:run_1", 500_000_000)]
    r = _reserve(db, caps, 400_000_000)
    assert r.scopes == ("run:run_1",)
    with pytest.raises(BudgetExceededError):
        _reserve(db, caps, 100_000_001, rid="rsv_2")
    snap = budgets.snapshot(db, "run:run_1")
    assert snap is not None and snap[0].cap_nusd == 500_000_000 and snap[1].calls == 1


def test_a_settle_that_loses_the_race_to_the_sweep_is_still_charged(
    db: Engine, db_url: str
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite writers never interleave (BEGIN IMMEDIATE)")
    caps = [ScopeCap("run:run_r", USD)]
    res = _reserve(db, caps, 800_000_000, rid="rsv_r", ttl_s=10)
    sweeper = db.connect()
    tx = sweeper.begin()
    row = budgets._mark(sweeper, "rsv_r", "released")  # the sweep, holding its row lock
    assert row is not None
    budgets._unhold(sweeper, row.scopes, row.amount_nusd, row.tokens, NOW)
    with ThreadPoolExecutor(1) as pool:
        settling = pool.submit(budgets.settle, db, res, actual_nusd=50, actual_tokens=1, now=NOW)
        time.sleep(0.3)  # the settle has read "held" and now waits on the sweep's lock
        tx.commit()
        settled = settling.result(timeout=10)
    sweeper.close()
    assert settled.charged_nusd == 50 and not settled.was_held
    snap = budgets.snapshot(db, "run:run_r")
    assert snap is not None
    assert (snap[1].spent_nusd, snap[1].reserved_nusd, snap[1].calls) == (50, 0, 1)


def test_a_batch_settle_keeps_the_same_books_as_one_by_one(db: Engine) -> None:
    """The gateway's settle writer: one transaction, one UPDATE per scope for the batch; a hold
    the sweep freed is still charged, one already settled is not charged twice."""
    caps = [ScopeCap("run:run_1", USD, None, 10), ScopeCap("global_day:2026-11-25", 10 * USD)]
    held = [_reserve(db, caps, 100_000_000, 50, f"rsv_{i}") for i in range(4)]
    budgets.settle(db, held[0], actual_nusd=1, actual_tokens=1, now=NOW)  # settled before
    expired = _reserve(db, caps, 100_000_000, 50, "rsv_swept", ttl_s=0)
    assert budgets.sweep_expired(db, NOW + timedelta(seconds=1)) == 1
    batch = [(r, 40_000_000 + i, 20 + i) for i, r in enumerate(held)] + [(expired, 7, 3)]
    assert budgets.settle_many(db, batch, now=NOW) == [None, True, True, True, False]
    for scope in held[0].scopes:
        snap = budgets.snapshot(db, scope)
        assert snap is not None
        st_ = snap[1]
        # rsv_0 once (its first settle), rsv_1..3 from the batch, the swept one charged
        assert st_.spent_nusd == 1 + 40_000_001 + 40_000_002 + 40_000_003 + 7
        assert st_.spent_tokens == 1 + 21 + 22 + 23 + 3
        assert (st_.reserved_nusd, st_.reserved_tokens, st_.calls) == (0, 0, 5)


def test_concurrent_reserves_with_different_fresh_caps_do_not_deadlock(db: Engine) -> None:
    """Each counter's caps are upserted right before its take: a reserve whose agent caps are
    known (it upserts its new run's only) and one that must write its agent's too (a cold cache,
    a policy change, another process) take the counter rows in the same order."""
    known = budgets._known_caps(db)

    def one(i: int) -> None:
        if i % 3 == 0:
            known.clear()  # as a process that has not written these caps yet
        caps = [ScopeCap("agent_day:a:2026-11-25", 100 * USD), ScopeCap(f"run:r{i // 4}", USD)]
        budgets.reserve(db, caps, reservation_id=f"rsv_{i}", amount_nusd=1, tokens=0,
                        run_id=f"r{i // 4}", now=NOW, ttl_s=60)  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(240)))
    snap = budgets.snapshot(db, "agent_day:a:2026-11-25")
    assert snap is not None and (snap[1].reserved_nusd, snap[1].calls) == (240, 240)


def test_a_fresh_cap_is_locked_in_scope_order_with_the_takes(db: Engine) -> None:
    """A cap upserted by the reserve (a policy change, or a process that has not written it
    yet) locks its counter in the same order as the takes: another transaction holding the
    first scope and then updating the last must not deadlock with it (PostgreSQL aborts one
    of the two after deadlock_timeout)."""
    if db.dialect.name != "postgresql":
        pytest.skip("row locks in a chosen order: PostgreSQL (SQLite has one writer)")
    first, last = ScopeCap("agent:a", 10 * USD), ScopeCap("run:run_1", USD)
    _reserve(db, [first, last], 1, rid="rsv_seed")
    other = db.raw_connection()
    cur = other.cursor()
    try:
        cur.execute("UPDATE budget_counters SET calls = calls WHERE scope = 'agent:a'")
        cur.execute("SELECT pg_backend_pid()")
        blocker = cur.fetchone()[0]
        with ThreadPoolExecutor(1) as pool:
            changed = ScopeCap("run:run_1", 2 * USD)  # fresh: its upsert precedes its take
            held = pool.submit(
                budget_pg.reserve_pg, db, [first, changed], [changed], reservation_id="rsv_2",
                amount_nusd=1, tokens=0, run_id="run_1", now=NOW,
                expires=NOW + timedelta(seconds=60),
            )  # fmt: skip
            _wait_until_blocked_by(db, blocker)
            # with the fresh cap locked before the takes, this update would wait on the
            # reserve while the reserve waits on this transaction's lock of agent:a
            cur.execute("UPDATE budget_counters SET calls = calls WHERE scope = 'run:run_1'")
            other.commit()
            assert held.result(timeout=30) is None
    finally:
        cur.close()
        other.close()
    snap = budgets.snapshot(db, "run:run_1")
    assert snap is not None and snap[0].cap_nusd == 2 * USD


def _wait_until_blocked_by(db: Engine, blocker: int) -> None:
    deadline = time.monotonic() + 30
    with db.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity"
                f" WHERE {int(blocker)} = ANY(pg_blocking_pids(pid))"
            ).scalar()
            conn.rollback()
            if waiting:
                return
            time.sleep(0.01)
    raise AssertionError("the reserve never waited for the other transaction's lock")


def test_plain_sql_reserve_and_settle_store_timestamps_as_sqlalchemy_does(db: Engine) -> None:
    """budget_sql/settle_sql bind through the dialect's DATETIME: on SQLite the same text as
    every other write ("YYYY-MM-DD HH:MM:SS.ffffff"), so range and order comparisons hold."""
    caps = [ScopeCap("run:run_1", USD)]
    r = _reserve(db, caps, 100_000_000, rid="rsv_ts")
    assert budgets.settle_many(db, [(r, 50_000_000, 10)], now=NOW) == [True]
    with db.connect() as conn:
        if db.dialect.name != "sqlite":  # timestamptz: the values, whatever the session's zone
            got = conn.execute(select(reservations.c.created_at, reservations.c.expires_at)
                               .where(reservations.c.id == "rsv_ts")).one()  # fmt: skip
            assert tuple(got) == (NOW, NOW + timedelta(seconds=60))
            return
        stored = conn.exec_driver_sql(
            "SELECT r.created_at, r.expires_at, c.updated_at FROM reservations r, "
            "budget_counters c WHERE r.id = 'rsv_ts' AND c.scope = 'run:run_1'"
        ).one()
    assert tuple(stored) == ("2026-11-25 12:00:00.000000", "2026-11-25 12:01:00.000000",
                             "2026-11-25 12:00:00.000000")  # fmt: skip
