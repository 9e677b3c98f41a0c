"""Run profiles, spend rollups, drift checks, model change points and alerts, on SQLite and
PostgreSQL, from spans written through the real ingest path."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from tether.core.errors import BadRequestError, ConflictError, NotFoundError
from tether.demo.watch_traffic import SUPPORT_V1, SUPPORT_V2, Behaviour, run_spans, steady_runs
from tether.store.alerts import AlertDraft, acknowledge, list_alerts, raise_alert
from tether.store.drift import check_drift, parse_span
from tether.store.engine import reading
from tether.store.ingest import write_spans
from tether.store.profiles import model_history, profile_runs, samples
from tether.store.rollups import rollup_spend, series_since
from tether.store.tables import run_profiles, spend_rollups
from tether.store.watch import WatchConfig, cost_pass, drift_pass

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
USERS = ("alice", "bob", "carol")


def _write(db: Engine, batches: list[list]) -> None:  # type: ignore[type-arg]
    flat = [s for b in batches for s in b]
    for i in range(0, len(flat), 2000):
        write_spans(db, flat[i : i + 2000], now=NOW, source="otlp")


def test_profiles_hold_the_tool_sequence_cost_and_served_model(db: Engine) -> None:
    rng = random.Random(1)
    spans = run_spans(rng, NOW - timedelta(hours=1), agent="support", version="v1",
                      user="alice", behaviour=SUPPORT_V1, task_type="refund")  # fmt: skip
    write_spans(db, spans, now=NOW, source="otlp")
    done = profile_runs(db, now=NOW)
    assert done.profiled == 1
    [sample] = samples(db, "support", NOW - timedelta(days=1), NOW)
    tools = tuple(s.name for s in spans if s.kind == "tool")
    assert sample.tools == tools
    assert sample.cost_nusd == sum(s.cost_nusd or 0 for s in spans)
    assert sample.llm_calls == len(tools) + 1
    with reading(db) as conn:
        row = conn.execute(select(run_profiles)).one()
    assert (row.model_served, row.task_type, row.user) == (SUPPORT_V1.model, "refund", "alice")
    # nothing changed since: a second pass re-reads only the overlap and changes nothing
    again = profile_runs(db, now=NOW + timedelta(minutes=5))
    assert again.profiled <= 1
    assert samples(db, "support", NOW - timedelta(days=1), NOW) == [sample]


def test_profiling_pages_through_many_runs_with_one_updated_at(db: Engine) -> None:
    rng = random.Random(2)
    runs = [run_spans(rng, NOW - timedelta(minutes=i + 1), agent="a", version="v1", user="u",
                      behaviour=SUPPORT_V1) for i in range(25)]  # fmt: skip
    _write(db, runs)  # one batch: every run has the same updated_at
    assert profile_runs(db, now=NOW, batch=10).profiled == 25
    assert len(samples(db, "a", NOW - timedelta(days=1), NOW)) == 25


def test_a_new_served_model_is_a_change_point(db: Engine) -> None:
    rng = random.Random(3)
    newer = replace(SUPPORT_V1, model="gpt-4o-mini-2025-01-31")
    old = [run_spans(rng, NOW - timedelta(hours=10 - i), agent="support", version="v1",
                     user="u", behaviour=SUPPORT_V1) for i in range(5)]  # fmt: skip
    _write(db, old)
    assert profile_runs(db, now=NOW).model_changes == ()
    new = [run_spans(rng, NOW - timedelta(hours=3 - i), agent="support", version="v1",
                     user="u", behaviour=newer) for i in range(3)]  # fmt: skip
    _write(db, new)
    [change] = profile_runs(db, now=NOW).model_changes
    assert (change.previous, change.model) == (SUPPORT_V1.model, newer.model)
    assert change.changed_at == min(r[0].started_at for r in new)
    assert [m["model"] for m in model_history(db, "support")] == [SUPPORT_V1.model, newer.model]
    # the same model seen again is no new change point
    _write(db, [run_spans(rng, NOW - timedelta(minutes=5), agent="support", version="v1",
                          user="u", behaviour=newer)])  # fmt: skip
    assert profile_runs(db, now=NOW).model_changes == ()


def _history(db: Engine, current: Behaviour, *, seed: int = 4) -> None:
    rng = random.Random(seed)
    week = list(steady_runs(rng, NOW - timedelta(days=8), NOW - timedelta(days=1),
                            runs_per_hour=4, agent="support", version="v1", users=USERS,
                            behaviour=SUPPORT_V1))  # fmt: skip
    day = list(steady_runs(rng, NOW - timedelta(days=1), NOW, runs_per_hour=8,
                           agent="support", version="v2" if current is SUPPORT_V2 else "v1",
                           users=USERS, behaviour=current))  # fmt: skip
    _write(db, week + day)
    profile_runs(db, now=NOW)


def test_drift_check_flags_a_drifting_version_and_names_what_moved(db: Engine) -> None:
    _history(db, SUPPORT_V2)
    report = check_drift(db, "support", now=NOW)
    verdict = report.verdict
    assert verdict.drifted
    assert {"sequences", "cost"} <= set(verdict.moved)
    appeared = {s.tools for s in verdict.sequences.appeared}
    assert ("crm.lookup_customer", "billing.refund", "helpdesk.reply") in appeared
    gone = {s.tools for s in verdict.sequences.disappeared}
    assert ("crm.lookup_customer", "kb.search", "helpdesk.reply") in gone
    body = report.to_dict()
    assert body["drifted"] and body["window"]["to"] == NOW.isoformat()
    # only v2's runs in the window, against no v2 baseline: not enough to judge
    assert not check_drift(db, "support", now=NOW, version="v2").verdict.drifted


def test_drift_check_of_a_steady_agent_is_stable(db: Engine) -> None:
    _history(db, SUPPORT_V1, seed=5)
    verdict = check_drift(db, "support", now=NOW).verdict
    assert not verdict.drifted, verdict.to_dict()
    assert verdict.metric("sequences").status == "stable"


def test_spans_roll_up_per_hour_and_day_by_agent_version_user_and_task_type(db: Engine) -> None:
    rng = random.Random(6)
    a = run_spans(rng, NOW - timedelta(hours=2, minutes=30), agent="support", version="v1",
                  user="alice", behaviour=SUPPORT_V1, task_type="refund")  # fmt: skip
    b = run_spans(rng, NOW - timedelta(minutes=30), agent="support", version="v1",
                  user="bob", behaviour=SUPPORT_V1)  # fmt: skip
    _write(db, [a, b])
    rollup_spend(db, now=NOW)
    cost_a = sum(s.cost_nusd or 0 for s in a)
    cost_b = sum(s.cost_nusd or 0 for s in b)
    [alice] = series_since(db, "hour", NOW - timedelta(days=1), dimension="user", key="alice")
    assert alice.values == {datetime(2026, 11, 30, 9, tzinfo=UTC): cost_a}
    assert alice.top_runs[datetime(2026, 11, 30, 9, tzinfo=UTC)] == [(a[0].run_id, cost_a)]
    [day] = series_since(db, "day", NOW - timedelta(days=1), dimension="agent")
    assert day.values == {datetime(2026, 11, 30, tzinfo=UTC): cost_a + cost_b}
    [task] = series_since(db, "day", NOW - timedelta(days=1), dimension="task_type")
    assert task.key == "support:refund"
    # a late span in an hour already rolled up is counted when the next pass rebuilds it
    late = replace(b[1], span_id="f" * 16, cost_nusd=1_000)
    write_spans(db, [late], now=NOW, source="otlp")
    rollup_spend(db, now=NOW + timedelta(minutes=1))
    [day] = series_since(db, "day", NOW - timedelta(days=1), dimension="agent")
    assert day.values[datetime(2026, 11, 30, tzinfo=UTC)] == cost_a + cost_b + 1_000
    with reading(db) as conn:
        days = conn.execute(select(func.count()).where(spend_rollups.c.granularity == "day"))
        # agent, version, task type (only run a has one), user alice, user bob
        assert days.scalar() == 5


def test_a_spike_in_one_users_spend_raises_one_alert_with_its_range_and_runs(db: Engine) -> None:
    rng = random.Random(7)
    start = NOW - timedelta(days=21)
    runs = list(
        steady_runs(
            rng,
            start,
            NOW - timedelta(hours=1),
            runs_per_hour=3,
            agent="support",
            version="v1",
            users=USERS,
            behaviour=SUPPORT_V1,
        )
    )
    spike = [run_spans(rng, NOW - timedelta(hours=1) + timedelta(minutes=2 * i),
                       agent="support", version="v1", user="alice", behaviour=SUPPORT_V1,
                       cost_factor=3.0) for i in range(12)]  # fmt: skip
    _write(db, runs + spike)
    config = WatchConfig()
    raised = cost_pass(db, now=NOW, config=config)
    alice = [r for r in raised if r.alert.dedup_key.endswith(":user:alice")]
    assert alice, [r.alert.message for r in raised]
    alert = alice[0].alert
    assert alice[0].notify and alert.kind == "cost_anomaly"
    assert alert.low_nusd is not None and alert.high_nusd is not None
    assert alert.value_nusd is not None and alert.value_nusd > alert.high_nusd
    assert "normal range" in alert.message and "driven by" in alert.message
    top = {t["run_id"] for t in (alert.detail or {})["top_runs"]}
    assert top & {r[0].run_id for r in spike}
    # the next pass sees the same interval: no second alert, no second notification
    again = cost_pass(db, now=NOW + timedelta(minutes=1), config=config)
    assert not any(r.notify for r in again if r.alert.dedup_key == alert.dedup_key)
    items, _ = list_alerts(db, kind="cost_anomaly")
    assert len([a for a in items if a.dedup_key == alert.dedup_key]) == 1


def test_alerts_dedup_cool_down_and_acknowledge(db: Engine) -> None:
    hour = timedelta(hours=1)
    draft = AlertDraft(kind="cost_anomaly", dedup_key="cost:hour:user:bob", subject="user bob",
                       message="m", bucket_at=NOW)  # fmt: skip
    first = raise_alert(db, draft, now=NOW, cooldown=hour)
    assert first.new and first.notify
    same = raise_alert(db, draft, now=NOW + timedelta(minutes=5), cooldown=hour)
    assert not same.new and not same.notify and same.alert.id == first.alert.id
    later = replace(draft, bucket_at=NOW + hour)
    cooling = raise_alert(db, later, now=NOW + timedelta(minutes=30), cooldown=hour)
    assert not cooling.notify and cooling.alert.occurrences == 2
    after = raise_alert(db, replace(draft, bucket_at=NOW + 2 * hour), now=NOW + 2 * hour,
                        cooldown=hour)  # fmt: skip
    assert after.new and after.notify
    acked = acknowledge(db, after.alert.id, by="ops", note="known batch job", now=NOW + 3 * hour)
    assert (acked.status, acked.acknowledged_by, acked.ack_note) == (
        "acknowledged",
        "ops",
        "known batch job",
    )
    with pytest.raises(ConflictError):
        acknowledge(db, after.alert.id, by="ops", note=None, now=NOW + 3 * hour)
    with pytest.raises(NotFoundError):
        acknowledge(db, "alrt_missing000000000", by="ops", note=None, now=NOW)
    # once acknowledged, a new interval is a new alert again, cool-down or not
    fresh = raise_alert(db, replace(draft, bucket_at=NOW + 3 * hour), now=NOW + 3 * hour,
                        cooldown=hour)  # fmt: skip
    assert fresh.new
    page, cursor = list_alerts(db, limit=2)
    assert [a.id for a in page] == [fresh.alert.id, after.alert.id] and cursor
    rest, end = list_alerts(db, limit=2, cursor=cursor)
    assert [a.id for a in rest] == [first.alert.id] and end is None
    assert [a.id for a in list_alerts(db, status="acknowledged")[0]] == [after.alert.id]
    with pytest.raises(BadRequestError):
        list_alerts(db, status="closed")


def test_drift_pass_alerts_once_per_agent_and_day(db: Engine) -> None:
    _history(db, SUPPORT_V2, seed=8)
    config = WatchConfig()
    [raised] = drift_pass(db, now=NOW, config=config)
    assert raised.notify and raised.alert.kind == "drift" and raised.alert.agent == "support"
    assert "tool sequences" in raised.alert.message
    [again] = drift_pass(db, now=NOW + timedelta(minutes=10), config=config)
    assert not again.notify and again.alert.id == raised.alert.id


def test_durations_parse_or_name_the_option() -> None:
    assert parse_span("7d", "baseline") == timedelta(days=7)
    assert parse_span("12h", "window") == timedelta(hours=12)
    with pytest.raises(BadRequestError, match="baseline"):
        parse_span("7 days", "baseline")
    with pytest.raises(BadRequestError):
        parse_span("0d", "window")


def test_two_checkers_at_once_raise_and_notify_each_alert_once(db_url: str) -> None:
    """Two replicas on one database: the same alert raised by both at the same moment, many
    times over, is stored once and notified once."""
    import threading

    from tether.store.engine import make_engine
    from tether.store.migrate import upgrade

    engines = [make_engine(db_url, pool_size=3) for _ in range(2)]
    upgrade(engines[0])
    rounds, notified = 25, []
    try:
        for i in range(rounds):
            draft = AlertDraft(kind="cost_anomaly", dedup_key=f"cost:hour:user:u{i}",
                               subject=f"user u{i}", message="m", bucket_at=NOW)  # fmt: skip
            barrier = threading.Barrier(2)
            out: list[bool] = []

            def check(
                engine: Engine,
                draft: AlertDraft = draft,
                barrier: threading.Barrier = barrier,
                out: list[bool] = out,
            ) -> None:
                barrier.wait(timeout=60)
                out.append(raise_alert(engine, draft, now=NOW, cooldown=timedelta(hours=1)).notify)

            threads = [threading.Thread(target=check, args=(e,)) for e in engines]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            notified.append(sum(out))
        items, _ = list_alerts(engines[0], limit=500)
        assert len(items) == rounds
        assert notified == [1] * rounds
    finally:
        for e in engines:
            e.dispose()


def test_two_cost_passes_at_once_alert_a_spike_once(db_url: str) -> None:
    import threading

    from tether.store.engine import make_engine
    from tether.store.migrate import upgrade

    engines = [make_engine(db_url, pool_size=3) for _ in range(2)]
    upgrade(engines[0])
    try:
        rng = random.Random(7)
        runs = list(steady_runs(rng, NOW - timedelta(days=21), NOW - timedelta(hours=1),
                                runs_per_hour=3, agent="support", version="v1", users=USERS,
                                behaviour=SUPPORT_V1))  # fmt: skip
        spike = [run_spans(rng, NOW - timedelta(hours=1) + timedelta(minutes=2 * i),
                           agent="support", version="v1", user="alice", behaviour=SUPPORT_V1,
                           cost_factor=3.0) for i in range(12)]  # fmt: skip
        _write(engines[0], runs + spike)
        barrier = threading.Barrier(2)
        raised: list[list] = []  # type: ignore[type-arg]
        errors: list[BaseException] = []

        def check(engine: Engine) -> None:
            try:
                barrier.wait(timeout=60)
                raised.append(cost_pass(engine, now=NOW, config=WatchConfig()))
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=check, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        sent = [r.alert.dedup_key for batch in raised for r in batch if r.notify]
        assert any(k.endswith(":user:alice") for k in sent)
        assert len(sent) == len(set(sent)), sent
        items, _ = list_alerts(engines[0], limit=500)
        keys = [(a.dedup_key, a.bucket_at) for a in items]
        assert len(keys) == len(set(keys)), keys
    finally:
        for e in engines:
            e.dispose()
