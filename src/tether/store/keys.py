"""API keys: created with a secret shown once, stored as a SHA-256 hash, revocable, with an
optional expiry, and rotated with an overlap (the new key is live at once, the old one until
the overlap ends)."""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, insert, select, update

from tether.core.errors import BadRequestError, ConflictError, NotFoundError
from tether.core.ids import make_id
from tether.core.key_policy import KeyTimes
from tether.core.key_policy import status as key_status
from tether.store import audit
from tether.store.engine import reading
from tether.store.tables import api_keys

SCOPES = frozenset({"admin", "ingest", "agent", "read"})
KEY_PREFIX = "tth_"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str | None
    prefix: str
    scopes: tuple[str, ...]
    agent: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None = None
    # set on a key rotated out: the id of the key that replaces it
    replaced_by: str | None = None

    def times(self) -> KeyTimes:
        return KeyTimes(self.id, self.created_at, self.expires_at, self.replaced_by,
                        self.revoked_at)  # fmt: skip

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "scopes": list(self.scopes),
            "agent": self.agent,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "replaced_by": self.replaced_by,
        }


MIN_IMPORTED_CHARS = 32


def view(
    key: ApiKey, *, now: datetime, max_age_days: int | None, warn_days: int
) -> dict[str, object]:
    """A key as the API, the CLI and the console show it: its fields, its age in seconds and its
    rotation status under the policy (`keys.max_age_days`, `keys.warn_days`)."""
    status = key_status(key.times(), max_age_days=max_age_days, warn_days=warn_days, now=now)
    age = round((now - key.created_at).total_seconds(), 3)
    return {**key.to_dict(), "age_s": age, "status": status}


def find_by_hash_of(engine: Engine, secret: str) -> str | None:
    """The id of the key (live or revoked) whose secret this is."""
    with engine.connect() as conn:
        found = conn.execute(
            select(api_keys.c.id).where(api_keys.c.hash == hash_secret(secret))
        ).scalar()
    return None if found is None else str(found)


def hash_secret(secret: str) -> str:
    # The secrets are 32 random bytes, so a fast hash is enough: no dictionary to guess from.
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(raw: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    scopes = tuple(sorted({s.strip() for s in items if s.strip()}))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise BadRequestError(
            f"unknown scope(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(sorted(SCOPES))}"
        )
    return scopes


def create_key(
    engine: Engine,
    *,
    scopes: str | list[str] | tuple[str, ...],
    agent: str | None = None,
    name: str | None = None,
    now: datetime | None = None,
    actor: str | None = None,
    secret: str | None = None,
    expires_in: timedelta | None = None,
) -> tuple[ApiKey, str]:
    """Returns the stored key and its secret; the secret is not kept and cannot be shown again.

    With `actor`, the audit entry `key.created` is written in the same transaction. `secret`
    imports one made elsewhere (a Kubernetes Secret a Helm install generated) instead. With
    `expires_in`, the key is refused (401 key_expired) from then on.
    """
    parsed = parse_scopes(scopes)
    if "agent" in parsed and not agent:
        raise BadRequestError("a key with the `agent` scope needs an agent name (--agent NAME)")
    if secret is not None and (len(secret) < MIN_IMPORTED_CHARS or secret != secret.strip()):
        raise BadRequestError(
            f"an imported key secret needs at least {MIN_IMPORTED_CHARS} characters and no "
            "surrounding spaces; generate one with `openssl rand -base64 32`"
        )
    _check_lifetime(expires_in)
    created = now or datetime.now(UTC)
    with engine.begin() as conn:
        key, secret = _insert(conn, parsed, agent, name, created, expires_in, secret)
        if actor is not None:
            data: dict[str, object] = {"scopes": list(parsed), "agent": agent}
            if key.expires_at is not None:
                data["expires_at"] = key.expires_at.isoformat()
            audit.append_in(conn, actor, "key.created", key.id, data, created)
    return key, secret


def _check_lifetime(expires_in: timedelta | None) -> None:
    if expires_in is not None and expires_in <= timedelta(0):
        raise BadRequestError("a key's lifetime must be positive (e.g. --expires-in 90d)")


def _insert(
    conn: Connection,
    scopes: tuple[str, ...],
    agent: str | None,
    name: str | None,
    created: datetime,
    expires_in: timedelta | None,
    secret: str | None,
) -> tuple[ApiKey, str]:
    secret = secret or KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=make_id("key", os.urandom(12)),
        name=name,
        prefix=secret[: len(KEY_PREFIX) + 6],
        scopes=scopes,
        agent=agent,
        created_at=created,
        last_used_at=None,
        revoked_at=None,
        expires_at=created + expires_in if expires_in is not None else None,
    )
    conn.execute(
        insert(api_keys).values(
            id=key.id,
            name=name,
            prefix=key.prefix,
            hash=hash_secret(secret),
            scopes=",".join(scopes),
            agent=agent,
            created_at=created,
            expires_at=key.expires_at,
        )
    )
    return key, secret


def rotate_key(
    engine: Engine,
    key_id: str,
    *,
    overlap: timedelta,
    now: datetime | None = None,
    actor: str | None = None,
    expires_in: timedelta | None = None,
) -> tuple[ApiKey, str, ApiKey]:
    """Makes a new key with the same scopes, agent and name as `key_id` and lets the old one
    live until `now + overlap` (never longer than it would have): (new key, its secret, the old
    key as it now is). The new key's lifetime is `expires_in`, else the old key's, else none.
    With `actor`, `key.rotated` (on the old key) and `key.created` are audited together."""
    if overlap < timedelta(0):
        raise BadRequestError("the overlap cannot be negative (e.g. --overlap 1h, or 0s)")
    _check_lifetime(expires_in)
    when = now or datetime.now(UTC)
    with engine.begin() as conn:
        row = conn.execute(
            select(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        ).first()
        if row is None:
            raise NotFoundError(f"no live API key {key_id}; `tether keys list` shows the ids")
        old = _row_to_key(row)
        if old.replaced_by is not None:
            raise ConflictError(
                f"{key_id} was already rotated (replaced by {old.replaced_by}); rotate that one"
            )
        if expires_in is None and old.expires_at is not None:
            expires_in = old.expires_at - old.created_at  # the same lifetime as before
        new, secret = _insert(conn, old.scopes, old.agent, old.name, when, expires_in, None)
        ends = when + overlap
        if old.expires_at is not None and old.expires_at < ends:
            ends = old.expires_at
        conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id)
            .values(expires_at=ends, replaced_by=new.id)
        )
        old = replace(old, expires_at=ends, replaced_by=new.id)
        if actor is not None:
            data: dict[str, object] = {"replaced_by": new.id, "old_expires_at": ends.isoformat(),
                                       "overlap_s": int(overlap.total_seconds())}  # fmt: skip
            audit.append_in(conn, actor, "key.rotated", key_id, data, when)
            created: dict[str, object] = {"scopes": list(new.scopes), "agent": new.agent,
                                          "rotated_from": key_id}  # fmt: skip
            if new.expires_at is not None:
                created["expires_at"] = new.expires_at.isoformat()
            audit.append_in(conn, actor, "key.created", new.id, created, when)
    return new, secret, old


def _row_to_key(row: object) -> ApiKey:
    r = row._mapping  # type: ignore[attr-defined]
    return ApiKey(
        id=r["id"],
        name=r["name"],
        prefix=r["prefix"],
        scopes=tuple(r["scopes"].split(",")),
        agent=r["agent"],
        created_at=r["created_at"],
        last_used_at=r["last_used_at"],
        revoked_at=r["revoked_at"],
        expires_at=r["expires_at"],
        replaced_by=r["replaced_by"],
    )


def find_by_secret(engine: Engine, secret: str) -> ApiKey | None:
    """The unrevoked key with this secret, or None (an expired one too: the caller says why)."""
    with reading(engine) as conn:
        row = conn.execute(
            select(api_keys).where(
                api_keys.c.hash == hash_secret(secret), api_keys.c.revoked_at.is_(None)
            )
        ).first()
    return _row_to_key(row) if row else None


def list_keys(engine: Engine, *, include_revoked: bool = False) -> list[ApiKey]:
    q = select(api_keys).order_by(api_keys.c.created_at)
    if not include_revoked:
        q = q.where(api_keys.c.revoked_at.is_(None))
    with reading(engine) as conn:
        return [_row_to_key(r) for r in conn.execute(q)]


def count_live_keys(engine: Engine) -> int:
    return len(list_keys(engine))


def revoke_key(
    engine: Engine, key_id: str, *, now: datetime | None = None, actor: str | None = None
) -> ApiKey:
    """Revokes a live key; with `actor`, audits `key.revoked` in the same transaction."""
    when = now or datetime.now(UTC)
    with engine.begin() as conn:
        res = conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=when)
        )
        if res.rowcount == 0:
            raise NotFoundError(f"no live API key {key_id}; `tether keys list` shows the ids")
        row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one()
        if actor is not None:
            audit.append_in(conn, actor, "key.revoked", key_id, None, when)
    return _row_to_key(row)


def touch_key(engine: Engine, key_id: str, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now))
