"""When an API key is refused or due for rotation: its own expiry (a lifetime, or the end of a
rotation's overlap) and the rotation policy `keys.max_age_days`. A key being rotated out
(it has a replacement) lives to the end of its overlap even past the age limit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from tether.core.errors import KeyExpiredError

Status = Literal["ok", "rotate_soon", "rotating", "expired", "too_old", "revoked"]


@dataclass(frozen=True)
class KeyTimes:
    key_id: str
    created_at: datetime
    expires_at: datetime | None
    replaced_by: str | None
    revoked_at: datetime | None = None


def refusal(key: KeyTimes, *, max_age_days: int | None, now: datetime) -> KeyExpiredError | None:
    """The error to answer a call made with `key` at `now`, or None when it is valid."""
    if key.expires_at is not None and now >= key.expires_at:
        fix = (
            f"it was rotated: use its replacement ({key.replaced_by})"
            if key.replaced_by
            else f"rotate it (`tether keys rotate {key.key_id}`) or create a new one"
        )
        return KeyExpiredError(
            f"API key {key.key_id} expired at {key.expires_at.isoformat(timespec='seconds')}; "
            + fix,
            code="key_expired",
        )
    if max_age_days is not None and key.replaced_by is None:
        age = now - key.created_at
        if age >= timedelta(days=max_age_days):
            return KeyExpiredError(
                f"API key {key.key_id} is {age.days} days old, past the rotation policy "
                f"(keys.max_age_days: {max_age_days}); rotate it with "
                f"`tether keys rotate {key.key_id} --overlap 1h` and switch to the new key",
                code="key_too_old",
            )
    return None


def due_at(key: KeyTimes, *, max_age_days: int | None) -> datetime | None:
    """When the key stops working: its expiry or its age limit, whichever comes first."""
    ends = [key.expires_at] if key.expires_at is not None else []
    if max_age_days is not None and key.replaced_by is None:
        ends.append(key.created_at + timedelta(days=max_age_days))
    return min(ends) if ends else None


def status(key: KeyTimes, *, max_age_days: int | None, warn_days: int, now: datetime) -> Status:
    """What the console shows: revoked, expired / too_old (refused), rotating (in its overlap),
    rotate_soon (within `warn_days` of `due_at`), or ok."""
    if key.revoked_at is not None:
        return "revoked"
    refused = refusal(key, max_age_days=max_age_days, now=now)
    if refused is not None:
        return "expired" if refused.code == "key_expired" else "too_old"
    if key.replaced_by is not None:
        return "rotating"
    ends = due_at(key, max_age_days=max_age_days)
    if ends is not None and ends - now <= timedelta(days=warn_days):
        return "rotate_soon"
    return "ok"
