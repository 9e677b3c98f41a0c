"""When a key is refused or due for rotation (core/key_policy.py) and durations (core/durations)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.core.durations import parse_duration
from tether.core.errors import BadRequestError, KeyExpiredError
from tether.core.key_policy import KeyTimes, due_at, refusal, status

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def key(age: timedelta, expires_in: timedelta | None = None, replaced: bool = False) -> KeyTimes:
    return KeyTimes("key_a", NOW - age, NOW + expires_in if expires_in is not None else None,
                    "key_b" if replaced else None)  # fmt: skip


def test_a_key_past_its_expiry_is_refused_with_the_fix() -> None:
    assert refusal(key(DAY, expires_in=timedelta(seconds=1)), max_age_days=None, now=NOW) is None
    err = refusal(key(DAY, expires_in=timedelta(0)), max_age_days=None, now=NOW)
    assert isinstance(err, KeyExpiredError) and err.http_status == 401
    assert err.type == "key_expired" and err.code == "key_expired"
    assert "tether keys rotate key_a" in err.message
    rotated = refusal(key(DAY, expires_in=-DAY, replaced=True), max_age_days=None, now=NOW)
    assert rotated is not None and "use its replacement (key_b)" in rotated.message


def test_the_rotation_policy_refuses_old_keys_but_not_one_being_rotated_out() -> None:
    assert refusal(key(89 * DAY), max_age_days=90, now=NOW) is None
    old = refusal(key(90 * DAY), max_age_days=90, now=NOW)
    assert old is not None and old.code == "key_too_old" and "90 days old" in old.message
    # in its overlap the old key keeps working past the age limit, until the overlap ends
    assert refusal(key(400 * DAY, expires_in=DAY, replaced=True), max_age_days=90, now=NOW) is None
    assert refusal(key(400 * DAY), max_age_days=None, now=NOW) is None


def test_status_for_the_console() -> None:
    def of(k: KeyTimes, max_age: int | None = 90) -> str:
        return status(k, max_age_days=max_age, warn_days=14, now=NOW)

    assert of(key(DAY)) == "ok"
    assert of(key(80 * DAY)) == "rotate_soon"  # due in 10 days
    assert of(key(DAY, expires_in=3 * DAY), None) == "rotate_soon"
    assert of(key(91 * DAY)) == "too_old"
    assert of(key(DAY, expires_in=-DAY)) == "expired"
    assert of(key(DAY, expires_in=DAY, replaced=True)) == "rotating"
    assert of(KeyTimes("k", NOW, None, None, revoked_at=NOW)) == "revoked"
    assert due_at(key(DAY, expires_in=DAY), max_age_days=90) == NOW + DAY
    assert due_at(key(DAY), max_age_days=90) == NOW + 89 * DAY
    assert due_at(key(DAY), max_age_days=None) is None


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration(" 1h ") == timedelta(hours=1)
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_duration("0s") == timedelta(0)
    for bad in ("", "1", "h", "1.5h", "-1h", "1y", "1h30m", "99999w"):
        with pytest.raises(BadRequestError, match="overlap"):
            parse_duration(bad, what="overlap")


@given(st.integers(min_value=0, max_value=5000), st.sampled_from("smhdw"))
def test_every_number_and_unit_parses(n: int, unit: str) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_duration(f"{n}{unit}").total_seconds() == n * seconds
