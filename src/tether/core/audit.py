"""The audit log's hash chain: each entry's hash covers the previous hash and its own content,
so changing, inserting or deleting any entry (but the newest) breaks every later link.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    id: str
    at: datetime
    actor: str
    action: str
    subject: str | None
    data: Any
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.id,
            "at": format_at(self.at),
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "data": self.data,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class VerifyReport:
    """`ok` when every link holds; else the first bad entry's seq and what is wrong with it."""

    ok: bool
    count: int
    first_bad_seq: int | None
    problem: str | None
    head_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "head_hash": self.head_hash,
        }


def format_at(at: datetime) -> str:
    """A fixed text form of a timestamp (UTC, microseconds), the same on every database."""
    if at.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_data(data: Any) -> Any:
    """`data` as JSON gives it back (tuples -> lists, Decimals -> strings), so what is stored
    is exactly what was hashed."""
    return json.loads(json.dumps(data, default=str, ensure_ascii=False))


def canonical(
    id: str, at: datetime, actor: str, action: str, subject: str | None, data: Any
) -> bytes:
    return json.dumps(
        [id, format_at(at), actor, action, subject, data],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    ).encode()


def entry_hash(
    prev_hash: str,
    id: str,
    at: datetime,
    actor: str,
    action: str,
    subject: str | None,
    data: Any,
) -> str:
    """sha256(prev_hash + canonical JSON of (id, at, actor, action, subject, data))."""
    h = hashlib.sha256(prev_hash.encode())
    h.update(canonical(id, at, actor, action, subject, data))
    return h.hexdigest()


def seal(
    prev_hash: str,
    seq: int,
    id: str,
    at: datetime,
    actor: str,
    action: str,
    subject: str | None,
    data: Any,
) -> AuditEntry:
    """A new entry linked after `prev_hash`."""
    data = canonical_data(data)
    digest = entry_hash(prev_hash, id, at, actor, action, subject, data)
    return AuditEntry(seq, id, at, actor, action, subject, data, prev_hash, digest)


def check_entry(entry: AuditEntry, expected_prev: str) -> str | None:
    """What is wrong with `entry` following a chain whose head is `expected_prev`, or None."""
    if entry.prev_hash != expected_prev:
        return (
            "prev_hash does not match the previous entry's hash (an entry was changed, "
            "removed or inserted before this one)"
        )
    digest = entry_hash(
        entry.prev_hash, entry.id, entry.at, entry.actor, entry.action, entry.subject, entry.data
    )
    if digest != entry.hash:
        return "hash does not match the entry's content (this entry was changed)"
    return None


def verify(entries: Iterable[AuditEntry], start_prev: str = GENESIS) -> VerifyReport:
    """Walks the chain in seq order; reports the first entry whose link or content is wrong."""
    prev = start_prev
    count = 0
    last_seq: int | None = None
    for entry in entries:
        count += 1
        if last_seq is not None and entry.seq <= last_seq:
            return VerifyReport(False, count, entry.seq, "entries are out of order", prev)
        problem = check_entry(entry, prev)
        if problem is not None:
            return VerifyReport(False, count, entry.seq, problem, prev)
        prev = entry.hash
        last_seq = entry.seq
    return VerifyReport(True, count, None, None, prev)


def first_bad_seq(entries: Iterable[AuditEntry]) -> int | None:
    return verify(entries).first_bad_seq
