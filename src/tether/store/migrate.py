"""Runs the Alembic migrations; safe when several `tether serve` processes start at once.

Alembic itself (about 100 modules, Mako and Pygments with them: ~5 MB of server RSS) is
imported only when a database needs an upgrade: a restart on a database already at head reads
the revision with a plain query and the head from the migration files' own `revision` lines.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from tether.store.engine import reading

if TYPE_CHECKING:
    from alembic.config import Config

_HERE = Path(__file__).parent / "migrations"
_LOCK_KEY = 7337_0001
# Alembic's default version table (tether does not configure another one).
VERSION_TABLE = "alembic_version"
_ASSIGNED = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.MULTILINE)


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Brings the database to `revision`; returns the revision it is at afterwards."""
    if revision == "head":
        current = current_revision(engine)
        if current is not None and current == head_revision():
            return current  # a restart: nothing to do, and no need to load Alembic
    from alembic import command

    cfg = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Serialise concurrent starts; SQLite's BEGIN IMMEDIATE already does.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None when it was never migrated). A read: on SQLite it
    does not wait for the write lock."""
    with reading(engine) as conn:
        return _current(conn)


def _current(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    found = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(found) <= 1:
        return str(found[0]) if found else None
    # Several heads (a branched history): Alembic's own check says what is wrong.
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


@functools.cache
def head_revision() -> str | None:
    """The newest revision of the migrations that ship with this tether."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (_HERE / "versions").glob("*.py"):
        values = dict(_ASSIGNED.findall(path.read_text(encoding="utf-8")))
        if "revision" not in values:
            continue
        revisions.add(_literal(values["revision"]))
        if values.get("down_revision", "None") != "None":
            parents.add(_literal(values["down_revision"]))
    heads = revisions - parents
    if len(heads) == 1:
        return heads.pop()
    # None, several heads, or a revision line this reader does not follow: ask Alembic.
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _literal(value: str) -> str:
    return value.strip().strip("\"'")
