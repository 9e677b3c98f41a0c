from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from tether.core.errors import BadRequestError, NotFoundError
from tether.store import keys
from tether.store.tables import api_keys, audit_log


def test_key_is_stored_hashed_and_found_by_secret(db: Engine) -> None:
    key, secret = keys.create_key(db, scopes="agent,ingest", agent="triage", name="t")
    assert secret.startswith("tth_")
    with db.connect() as conn:
        stored = conn.execute(select(api_keys.c.hash)).scalar_one()
    assert secret not in stored and stored == keys.hash_secret(secret)
    found = keys.find_by_secret(db, secret)
    assert found is not None and found.id == key.id
    assert found.scopes == ("agent", "ingest") and found.agent == "triage"
    assert keys.find_by_secret(db, secret + "x") is None


def test_revoked_key_no_longer_authenticates(db: Engine) -> None:
    key, secret = keys.create_key(db, scopes="admin")
    keys.revoke_key(db, key.id)
    assert keys.find_by_secret(db, secret) is None
    with pytest.raises(NotFoundError):
        keys.revoke_key(db, key.id)


def test_bad_scopes_are_refused(db: Engine) -> None:
    with pytest.raises(BadRequestError, match="unknown scope"):
        keys.create_key(db, scopes="root")
    with pytest.raises(BadRequestError, match="needs an agent"):
        keys.create_key(db, scopes="agent")
    assert keys.list_keys(db) == []


def test_key_and_its_audit_entry_land_together_or_not_at_all(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tether.store import audit

    key, _ = keys.create_key(db, scopes="admin", actor="cli:root")
    keys.revoke_key(db, key.id, actor="cli:root")
    with db.connect() as conn:
        rows = conn.execute(select(audit_log.c.action, audit_log.c.subject)).all()
    assert [tuple(r) for r in rows] == [("key.created", key.id), ("key.revoked", key.id)]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("audit store down")

    monkeypatch.setattr(audit, "append_in", broken)
    with pytest.raises(RuntimeError):
        keys.create_key(db, scopes="read", actor="cli:root")
    assert [k.id for k in keys.list_keys(db, include_revoked=True)] == [key.id]
