"""The audit hash chain: any change to any field of any entry is found."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.audit import GENESIS, AuditEntry, entry_hash, seal, verify

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def make_chain(n: int) -> list[AuditEntry]:
    out: list[AuditEntry] = []
    prev = GENESIS
    for i in range(n):
        e = seal(
            prev,
            i + 1,
            f"aud_{i:019d}",
            T0 + timedelta(seconds=i),
            "key:k",
            "policy.decision",
            f"run_{i}",
            {"outcome": "allow", "i": i, "nested": {"b": [1, 2], "a": None}},
        )
        out.append(e)
        prev = e.hash
    return out


def test_intact_chain_verifies() -> None:
    chain = make_chain(5)
    report = verify(chain)
    assert report.ok and report.count == 5 and report.first_bad_seq is None
    assert report.head_hash == chain[-1].hash
    assert chain[0].prev_hash == GENESIS
    assert verify([]).ok


def test_hash_is_sha256_of_prev_and_canonical_content() -> None:
    import hashlib
    import json

    e = make_chain(1)[0]
    body = json.dumps(
        [e.id, "2026-11-25T12:00:00.000000Z", e.actor, e.action, e.subject, e.data],
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    assert e.hash == hashlib.sha256(GENESIS.encode() + body).hexdigest()
    # key order inside data does not matter; the content does
    again = entry_hash(
        GENESIS,
        e.id,
        e.at,
        e.actor,
        e.action,
        e.subject,
        {"nested": {"a": None, "b": [1, 2]}, "i": 0, "outcome": "allow"},
    )
    assert again == e.hash


_FIELDS = ["id", "at", "actor", "action", "subject", "data", "prev_hash", "hash"]


def _tamper(entry: AuditEntry, name: str, salt: int) -> AuditEntry:
    value = getattr(entry, name)
    if name == "at":
        return replace(entry, at=value + timedelta(microseconds=salt + 1))
    if name == "data":
        return replace(entry, data={**value, "i": value["i"] + salt + 1})
    if name in ("hash", "prev_hash"):
        flipped = "0" if value[salt % 64] != "0" else "1"
        return replace(entry, **{name: value[: salt % 64] + flipped + value[salt % 64 + 1 :]})
    return replace(entry, **{name: f"{value}x{salt}"})


@given(
    n=st.integers(1, 8),
    index=st.integers(0, 7),
    name=st.sampled_from(_FIELDS),
    salt=st.integers(0, 1000),
)
@settings(max_examples=300, deadline=None)
def test_any_single_field_tamper_is_detected(n: int, index: int, name: str, salt: int) -> None:
    chain = make_chain(n)
    i = index % n
    chain[i] = _tamper(chain[i], name, salt)
    report = verify(chain)
    assert not report.ok
    assert report.first_bad_seq == chain[i].seq
    assert report.problem


@given(n=st.integers(2, 8), index=st.integers(0, 6))
@settings(max_examples=100, deadline=None)
def test_deleted_or_reordered_entries_are_detected(n: int, index: int) -> None:
    chain = make_chain(n)
    i = index % (n - 1)
    removed = chain[:i] + chain[i + 1 :]
    assert verify(removed).first_bad_seq == chain[i + 1].seq
    swapped = list(chain)
    swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    assert not verify(swapped).ok
