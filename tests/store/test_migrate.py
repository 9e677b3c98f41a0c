"""Migrations: the revisions build exactly tables.py, and upgrading keeps existing data."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text

from tether.store.migrate import alembic_config, current_revision, head_revision, upgrade
from tether.store.tables import metadata


def test_upgrade_creates_every_table_and_is_idempotent(db: Engine) -> None:
    assert current_revision(db) == head_revision()
    names = set(inspect(db).get_table_names())
    assert set(metadata.tables) <= names
    assert upgrade(db) == head_revision()


def test_migrations_have_one_head_and_a_linear_history() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1, f"several heads: {script.get_heads()}"
    revisions = list(script.walk_revisions())
    assert revisions[-1].revision == "0001"
    for rev in revisions:
        assert not rev.is_merge_point, f"{rev.revision} merges branches; keep history linear"


def test_schema_after_upgrade_matches_tables_py(db: Engine) -> None:
    """Every change to tables.py ships as a migration: autogenerate finds nothing left to do."""
    with db.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
    assert diff == [], f"tables.py and the migrations disagree: {diff}"


def test_data_written_at_0001_survives_every_later_migration(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        upgrade(engine, "0001")
        assert current_revision(engine) == "0001"
        now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
        rows = {
            "agents": {"name": "triage", "created_at": now},
            "runs": {
                "id": "run_old",
                "agent": "triage",
                "status": "succeeded",
                "started_at": now,
                "updated_at": now,
                "input_tokens": 10,
                "output_tokens": 20,
                "cached_tokens": 0,
                "cost_nusd": 1234,
                "cost_unknown": False,
                "llm_calls": 1,
                "tool_calls": 0,
                "span_count": 1,
            },
            "spans": {
                "trace_id": "a" * 32,
                "span_id": "b" * 16,
                "run_id": "run_old",
                "kind": "llm",
                "name": "chat",
                "started_at": now,
                "status": "ok",
                "cost_unknown": False,
            },
            "api_keys": {
                "id": "key_old",
                "prefix": "tk_old",
                "hash": "h" * 64,
                "scopes": "admin",
                "created_at": now,
            },
            "policies": {
                "agent": "triage",
                "version": 1,
                "source": "agent: triage\n",
                "document": '{"agent": "triage"}',
                "sha256": "s" * 64,
                "created_at": now,
            },
        }
        with engine.begin() as conn:
            for table, row in rows.items():
                cols = ", ".join(f'"{c}"' for c in row)
                params = ", ".join(f":{c}" for c in row)
                conn.execute(text(f"INSERT INTO {table} ({cols}) VALUES ({params})"), row)
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            run = conn.execute(text("SELECT cost_nusd, agent FROM runs WHERE id='run_old'")).one()
            assert (run.cost_nusd, run.agent) == (1234, "triage")
            assert conn.execute(text("SELECT count(*) FROM spans")).scalar() == 1
            assert conn.execute(text("SELECT scopes FROM api_keys")).scalar() == "admin"
            assert conn.execute(text("SELECT source FROM policies")).scalar() == "agent: triage\n"
    finally:
        engine.dispose()


def test_head_revision_is_alembics_head() -> None:
    """head_revision reads the migration files itself (no Alembic at start-up): same answer."""
    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_current_revision_of_an_empty_database_is_none(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        assert current_revision(engine) is None
    finally:
        engine.dispose()


def test_a_database_at_head_is_checked_without_loading_alembic(db: Engine) -> None:
    """A restart reads the revision with a plain query: Alembic (~5 MB of server RSS) loads
    only when there is something to upgrade."""
    script = (
        "import sys\n"
        "from tether.store.engine import make_engine\n"
        "from tether.store.migrate import head_revision, upgrade\n"
        f"assert upgrade(make_engine({db.url.render_as_string(hide_password=False)!r})) "
        "== head_revision()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
