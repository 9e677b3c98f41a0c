"""Prefixed identifiers (`run_…`, `key_…`); randomness is passed in so core stays pure."""

from __future__ import annotations

import re

_ID_RE = re.compile(r"^[a-z]{2,5}_[0-9A-Za-z]{8,40}$")
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def encode(raw: bytes) -> str:
    """Base-36 text of `raw`, lower case, for ids that are easy to read and paste."""
    n = int.from_bytes(raw, "big")
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(reversed(out)) or "0"


def make_id(prefix: str, raw: bytes) -> str:
    """`make_id("run", os.urandom(12))` -> `run_2k9…`; 12 random bytes give ~19 characters."""
    return f"{prefix}_{encode(raw).rjust(19, '0')}"


def is_id(value: str, prefix: str | None = None) -> bool:
    if not _ID_RE.match(value):
        return False
    return prefix is None or value.startswith(prefix + "_")
