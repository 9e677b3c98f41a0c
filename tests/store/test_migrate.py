from __future__ import annotations

from sqlalchemy import Engine, inspect

from tether.store.migrate import current_revision, head_revision, upgrade
from tether.store.tables import metadata


def test_upgrade_creates_every_table_and_is_idempotent(db: Engine) -> None:
    assert current_revision(db) == head_revision()
    names = set(inspect(db).get_table_names())
    assert set(metadata.tables) <= names
    assert upgrade(db) == head_revision()
