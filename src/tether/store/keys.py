"""API keys: created with a secret shown once, stored as a SHA-256 hash, revocable."""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select, update

from tether.core.errors import BadRequestError, NotFoundError
from tether.core.ids import make_id
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
        }


MIN_IMPORTED_CHARS = 32


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
) -> tuple[ApiKey, str]:
    """Returns the stored key and its secret; the secret is not kept and cannot be shown again.

    With `actor`, the audit entry `key.created` is written in the same transaction. `secret`
    imports one made elsewhere (a Kubernetes Secret a Helm install generated) instead.
    """
    parsed = parse_scopes(scopes)
    if "agent" in parsed and not agent:
        raise BadRequestError("a key with the `agent` scope needs an agent name (--agent NAME)")
    if secret is not None and (len(secret) < MIN_IMPORTED_CHARS or secret != secret.strip()):
        raise BadRequestError(
            f"an imported key secret needs at least {MIN_IMPORTED_CHARS} characters and no "
            "surrounding spaces; generate one with `openssl rand -base64 32`"
        )
    secret = secret or KEY_PREFIX + secrets.token_urlsafe(32)
    created = now or datetime.now(UTC)
    key = ApiKey(
        id=make_id("key", os.urandom(12)),
        name=name,
        prefix=secret[: len(KEY_PREFIX) + 6],
        scopes=parsed,
        agent=agent,
        created_at=created,
        last_used_at=None,
        revoked_at=None,
    )
    with engine.begin() as conn:
        conn.execute(
            insert(api_keys).values(
                id=key.id,
                name=name,
                prefix=key.prefix,
                hash=hash_secret(secret),
                scopes=",".join(parsed),
                agent=agent,
                created_at=created,
            )
        )
        if actor is not None:
            data = {"scopes": list(parsed), "agent": agent}
            audit.append_in(conn, actor, "key.created", key.id, data, created)
    return key, secret


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
    )


def find_by_secret(engine: Engine, secret: str) -> ApiKey | None:
    """The live (unrevoked) key with this secret, or None."""
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
