"""store.gateway_run_sqlite: a named run's first gateway call creates the row ingest.ensure_run
would (byte for byte), never overwrites an existing run, and reads back its kill state, its
attributes and the caps it set for itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert, select, update

from tether.core.records import RunAttribution
from tether.store.gateway_run_sqlite import ensure_run_sqlite
from tether.store.ingest import ensure_run
from tether.store.tables import agent_versions, agents, run_caps, runs

T0 = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
WHO = RunAttribution(agent="bot", version="v3", task_id="t1", user="u1")


def _raw(db: Engine, table: str, key: str, value: str) -> dict[str, object]:
    with db.connect() as conn:
        row = conn.exec_driver_sql(f"SELECT * FROM {table} WHERE {key} = ?", (value,)).mappings()
        return dict(row.one())


def test_the_row_is_the_one_ensure_run_writes(sqlite_db: Engine) -> None:
    db = sqlite_db
    got = ensure_run_sqlite(db, "run_fast", trace_id="a" * 32, attribution=WHO,
                            started_at=T0, source="gateway", now=T0 + timedelta(seconds=1),
                            nowait=True)  # fmt: skip
    assert got is not None
    assert (got.started_at, got.agent, got.status, got.kill_reason) == (T0, "bot", "running",
                                                                         None)  # fmt: skip
    assert got.attributes is None and got.caps is None
    with db.begin() as conn:
        ensure_run(conn, "run_twin", trace_id="a" * 32, attribution=WHO, started_at=T0,
                   source="gateway", now=T0 + timedelta(seconds=1))  # fmt: skip
    mine, twin = _raw(db, "runs", "id", "run_fast"), _raw(db, "runs", "id", "run_twin")
    assert {**mine, "id": None} == {**twin, "id": None}
    with db.connect() as conn:
        assert conn.execute(select(agents.c.last_seen_at)).scalar() == T0 + timedelta(seconds=1)
        assert list(conn.execute(select(agent_versions.c.version)).scalars()) == ["v3"]


def test_an_existing_run_is_read_not_overwritten(sqlite_db: Engine) -> None:
    db = sqlite_db
    with db.begin() as conn:
        ensure_run(conn, "run_old", trace_id=None, attribution=RunAttribution(agent="other"),
                   started_at=T0, source="sdk", now=T0)  # fmt: skip
        conn.execute(
            update(runs)
            .where(runs.c.id == "run_old")
            .values(status="killed", kill_reason="too dear", attributes={"tether.eval_id": "ev_1"})
        )
        conn.execute(insert(run_caps).values(run_id="run_old", max_cost_nusd=5, max_tokens=None,
                                             max_llm_calls=3, updated_at=T0))  # fmt: skip
    later = T0 + timedelta(hours=1)
    got = ensure_run_sqlite(db, "run_old", trace_id="b" * 32, attribution=WHO, started_at=later,
                            source="gateway", now=later, nowait=False)  # fmt: skip
    assert got is not None
    assert (got.started_at, got.agent, got.status, got.kill_reason) == (T0, "other", "killed",
                                                                         "too dear")  # fmt: skip
    assert got.attributes == {"tether.eval_id": "ev_1"}
    assert got.caps == {"max_cost_nusd": 5, "max_tokens": None, "max_llm_calls": 3}
    row = _raw(db, "runs", "id", "run_old")
    assert (row["source"], row["trace_id"], row["agent"]) == ("sdk", None, "other")
