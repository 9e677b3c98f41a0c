"""Drift histograms, on SQLite and PostgreSQL: they agree with the run profiles (whole hours
and the partial hours at a window's edges), follow a run that is profiled again, and are not
counted twice when two replicas profile at once."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select

from tether.core.drift import WindowStats, binned
from tether.demo.watch_traffic import SUPPORT_V1, SUPPORT_V2, run_spans, steady_runs
from tether.store.drift_hist import split_hours
from tether.store.engine import reading
from tether.store.ingest import write_spans
from tether.store.profiles import profile_runs, samples, window_stats
from tether.store.tables import drift_sequences, drift_values, run_profiles

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _traffic(db: Engine, seed: int = 1) -> None:
    rng = random.Random(seed)
    runs = [*steady_runs(rng, NOW - timedelta(days=2), NOW - timedelta(hours=20),
                         runs_per_hour=6, agent="support", version="v1", users=("a", "b"),
                         behaviour=SUPPORT_V1),
            *steady_runs(rng, NOW - timedelta(hours=20), NOW, runs_per_hour=6,
                         agent="support", version="v2", users=("a", "b"),
                         behaviour=SUPPORT_V2)]  # fmt: skip
    flat = [s for r in runs for s in r]
    for i in range(0, len(flat), 2000):
        write_spans(db, flat[i : i + 2000], now=NOW, source="otlp")


def _direct(db: Engine, lo: datetime, hi: datetime, version: str | None = None) -> WindowStats:
    return binned(WindowStats.of(samples(db, "support", lo, hi, version=version)))


def _same(a: WindowStats, b: WindowStats) -> None:
    assert dict(a.sequences) == dict(b.sequences)
    assert (a.finished, a.at_target) == (b.finished, b.at_target)
    for metric in ("cost", "tokens", "llm_calls", "latency"):
        got, want = dict(a.values.get(metric, {})), dict(b.values.get(metric, {}))
        assert got.keys() == want.keys(), metric
        assert all(got[k] == want[k] for k in want), metric


def test_split_hours_reads_whole_hours_from_histograms_and_edges_from_profiles() -> None:
    t = NOW
    assert split_hours(t, t + timedelta(hours=3)) == ([], (t, t + timedelta(hours=3)))
    edges, whole = split_hours(t + timedelta(minutes=10), t + timedelta(hours=2, minutes=5))
    assert whole == (t + timedelta(hours=1), t + timedelta(hours=2))
    assert edges == [(t + timedelta(minutes=10), t + timedelta(hours=1)),
                     (t + timedelta(hours=2), t + timedelta(hours=2, minutes=5))]  # fmt: skip
    inside = (t + timedelta(minutes=5), t + timedelta(minutes=50))
    assert split_hours(*inside) == ([inside], None)


def test_histograms_agree_with_the_profiles_on_aligned_and_unaligned_windows(db: Engine) -> None:
    _traffic(db)
    profile_runs(db, now=NOW)
    odd = NOW - timedelta(minutes=17)
    for lo, mid, hi in (
        (NOW - timedelta(days=2), NOW - timedelta(hours=20), NOW),
        (odd - timedelta(hours=30), odd - timedelta(hours=7, minutes=41), odd),
    ):
        base, win = window_stats(db, "support", lo, mid, hi)
        _same(base, _direct(db, lo, mid))
        _same(win, _direct(db, mid, hi))
        only_v2, _ = window_stats(db, "support", mid, hi, hi, version="v2")
        _same(only_v2, _direct(db, mid, hi, version="v2"))


def test_a_run_profiled_again_moves_out_of_its_old_bins(db: Engine) -> None:
    rng = random.Random(3)
    spans = run_spans(rng, NOW - timedelta(hours=2), agent="support", version="v1", user="a",
                      behaviour=SUPPORT_V1)  # fmt: skip
    write_spans(db, spans, now=NOW, source="otlp")
    profile_runs(db, now=NOW)
    # a late tool span of the same run: its sequence and its latency change
    late = [s for s in spans if s.kind == "tool"][-1]
    assert late.ended_at is not None
    extra = replace(late, span_id="f" * 16, name="billing.refund", started_at=late.ended_at,
                    ended_at=late.ended_at + timedelta(seconds=30))  # fmt: skip
    write_spans(db, [extra], now=NOW + timedelta(minutes=5), source="otlp")
    profile_runs(db, now=NOW + timedelta(minutes=10))
    with reading(db) as conn:
        seqs = conn.execute(select(drift_sequences.c.tools, drift_sequences.c.runs)).all()
        total = conn.execute(
            select(drift_values.c.metric, func.sum(drift_values.c.runs)).group_by(
                drift_values.c.metric
            )
        ).all()
    live = [(tools, n) for tools, n in seqs if n]
    assert len(live) == 1 and live[0][0].split("\x1f")[-1] == "billing.refund"
    assert {m: int(n) for m, n in total}["cost"] == 1
    base, _ = window_stats(db, "support", NOW - timedelta(days=1), NOW, NOW)
    _same(base, _direct(db, NOW - timedelta(days=1), NOW))


def test_two_profiling_passes_at_once_count_each_run_once(db_url: str) -> None:
    from tether.store.engine import make_engine
    from tether.store.migrate import upgrade

    engines = [make_engine(db_url, pool_size=3) for _ in range(2)]
    upgrade(engines[0])
    try:
        _traffic(engines[0], seed=5)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def work(engine: Engine) -> None:
            try:
                barrier.wait(timeout=60)
                profile_runs(engine, now=NOW, batch=50)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        with reading(engines[0]) as conn:
            profiled = conn.execute(select(func.count()).select_from(run_profiles)).scalar_one()
            counted = conn.execute(
                select(func.sum(drift_sequences.c.runs)).select_from(drift_sequences)
            ).scalar_one()
        assert profiled > 100
        assert int(counted) == profiled
    finally:
        for e in engines:
            e.dispose()


def test_a_profiling_pass_waits_for_the_replica_holding_the_lock(db_url: str) -> None:
    """On PostgreSQL the pass takes its advisory lock per batch: while another session holds
    it, the pass waits (seen in pg_locks) and writes nothing; then it goes on."""
    if not db_url.startswith("postgresql"):
        return  # SQLite: BEGIN IMMEDIATE serialises every writer (tests/store/test_writelock.py)
    from sqlalchemy import text

    from tether.store.engine import make_engine
    from tether.store.migrate import upgrade
    from tether.store.profiles import _LOCK_KEY

    engine = make_engine(db_url, pool_size=3)
    upgrade(engine)
    try:
        _traffic(engine, seed=6)
        with engine.connect() as holder:
            holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
            worker = threading.Thread(target=profile_runs, args=(engine,), kwargs={"now": NOW})
            worker.start()
            deadline = time.monotonic() + 60
            waiting = 0
            while time.monotonic() < deadline and not waiting:
                with reading(engine) as conn:
                    waiting = conn.execute(
                        text(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                            "AND NOT granted AND objid = :k"
                        ),
                        {"k": _LOCK_KEY % 2**32},
                    ).scalar_one()
                time.sleep(0.05)
            assert waiting == 1
            with reading(engine) as conn:
                assert conn.execute(select(func.count()).select_from(run_profiles)).scalar() == 0
            holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
            holder.commit()
        worker.join(timeout=120)
        assert not worker.is_alive()
        with reading(engine) as conn:
            assert conn.execute(select(func.count()).select_from(run_profiles)).scalar() > 100
    finally:
        engine.dispose()
