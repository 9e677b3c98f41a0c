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


def test_a_key_made_with_a_lifetime_keeps_its_expiry(db: Engine) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 12, 1, tzinfo=UTC)
    key, secret = keys.create_key(db, scopes="read", now=now, expires_in=timedelta(days=30),
                                  actor="cli:test")  # fmt: skip
    found = keys.find_by_secret(db, secret)
    assert found is not None and found.expires_at == now + timedelta(days=30)
    assert key.to_dict()["expires_at"] == (now + timedelta(days=30)).isoformat()
    with pytest.raises(BadRequestError, match="lifetime must be positive"):
        keys.create_key(db, scopes="read", expires_in=timedelta(0))


def test_rotation_makes_a_twin_and_ends_the_old_key_after_the_overlap(db: Engine) -> None:
    from datetime import UTC, datetime, timedelta

    from tether.core.errors import ConflictError

    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    old, old_secret = keys.create_key(db, scopes="agent,ingest", agent="triage", name="bot",
                                      now=t0, expires_in=timedelta(days=90))  # fmt: skip
    t1 = t0 + timedelta(days=60)
    new, secret, before = keys.rotate_key(db, old.id, overlap=timedelta(hours=1), now=t1,
                                          actor="cli:ops")  # fmt: skip
    assert secret != old_secret and new.id != old.id
    assert (new.scopes, new.agent, new.name) == (old.scopes, old.agent, old.name)
    assert new.expires_at == t1 + timedelta(days=90)  # the same lifetime as the old key
    assert before.expires_at == t1 + timedelta(hours=1) and before.replaced_by == new.id
    stored = keys.find_by_secret(db, old_secret)
    assert stored is not None and stored.expires_at == before.expires_at  # live until then
    with db.connect() as conn:
        entries = conn.execute(select(audit_log.c.action, audit_log.c.subject)
                               .order_by(audit_log.c.seq)).all()  # fmt: skip
    assert [(e.action, e.subject) for e in entries] == [
        ("key.rotated", old.id),
        ("key.created", new.id),
    ]
    with pytest.raises(ConflictError, match="already rotated"):
        keys.rotate_key(db, old.id, overlap=timedelta(hours=1), now=t1)
    # an overlap never lengthens a key's life; 0s ends it at once
    short, _ = keys.create_key(db, scopes="read", now=t0, expires_in=timedelta(minutes=5))
    _, _, cut = keys.rotate_key(db, short.id, overlap=timedelta(days=7), now=t0)
    assert cut.expires_at == t0 + timedelta(minutes=5)
    plain, _ = keys.create_key(db, scopes="read", now=t0)
    fresh, _, gone = keys.rotate_key(db, plain.id, overlap=timedelta(0), now=t0,
                                     expires_in=timedelta(days=1))  # fmt: skip
    assert gone.expires_at == t0 and fresh.expires_at == t0 + timedelta(days=1)
    keys.revoke_key(db, fresh.id)
    with pytest.raises(NotFoundError):
        keys.rotate_key(db, fresh.id, overlap=timedelta(hours=1))
    with pytest.raises(BadRequestError, match="negative"):
        keys.rotate_key(db, new.id, overlap=timedelta(seconds=-1))


def test_view_shows_age_and_status(db: Engine) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 12, 1, tzinfo=UTC)
    key, _ = keys.create_key(db, scopes="read", now=now - timedelta(days=85))
    shown = keys.view(key, now=now, max_age_days=90, warn_days=14)
    assert shown["age_s"] == 85 * 86400 and shown["status"] == "rotate_soon"
    assert keys.view(key, now=now, max_age_days=None, warn_days=14)["status"] == "ok"
