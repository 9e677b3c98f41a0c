"""Text hygiene for ingested spans: JSON-safe attribute values, redaction (core/redact.py) before
any cut, removal of characters no database stores (NUL, lone surrogates), truncation."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from tether.core.redact import REDACTED, Redactor, redactor

MAX_TEXT_BYTES = 64 * 1024
_MAX_DEPTH = 20


def truncation_marker(total_bytes: int) -> str:
    return f"…[truncated by tether: {total_bytes} bytes in all]"


def clean_text(value: str | None, limit: int = MAX_TEXT_BYTES) -> str | None:
    """`value` without NUL and lone surrogates, cut to `limit` UTF-8 bytes with a marker."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "")
    if value.isascii():  # O(1) in CPython: no surrogates, one byte per character
        if len(value) <= limit:
            return value
        raw = value.encode("ascii")
    else:
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "replace")
            value = raw.decode("utf-8")
        if len(raw) <= limit:
            return value
    if limit < 200:  # short columns (names, models): no room for a marker
        return raw[:limit].decode("utf-8", "ignore")
    marker = truncation_marker(len(raw))
    head = raw[: limit - len(marker.encode("utf-8"))].decode("utf-8", "ignore")
    return head + marker


def as_text(value: Any) -> str | None:
    """A displayable string for an attribute value: strings as they are, structures as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, bool | int):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return json.dumps(json_safe(value), ensure_ascii=False, separators=(",", ":"))


def json_safe(value: Any, depth: int = 0) -> Any:
    """Anything decoded from OTLP as a value json.dumps and PostgreSQL's json type accept."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.hex()
    if depth >= _MAX_DEPTH:
        return as_text(str(value))
    if isinstance(value, Mapping):
        return {_clean_key(str(k)): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset):
        return [json_safe(v, depth + 1) for v in value]
    return clean_text(str(value))


def is_secret_key(key: str, redact: tuple[str, ...]) -> bool:
    return redactor(redact).is_secret_key(key)


@lru_cache(maxsize=4096)
def _clean_key(key: str) -> str:
    return clean_text(key, 1000) or ""


def clean_attributes(
    attrs: Mapping[str, Any], redact: tuple[str, ...], skip: tuple[str | None, ...] = ()
) -> dict[str, Any]:
    """JSON-safe, redacted, then truncated copy of a span's (or resource's) attributes."""
    return clean_attributes_as(attrs, key_plan(tuple(attrs), redact), redact, skip)


def key_plan(names: tuple[Any, ...], redact: tuple[str, ...]) -> tuple[tuple[str, bool], ...]:
    """Each attribute name as stored, and whether it names a secret (`clean_attributes_as`)."""
    is_secret = redactor(redact).is_secret_key
    keys = [_clean_key(k) if type(k) is str else _clean_key(str(k)) for k in names]
    return tuple((key, is_secret(key)) for key in keys)


def clean_attributes_as(
    attrs: Mapping[str, Any],
    plan: tuple[tuple[str, bool], ...],
    redact: tuple[str, ...],
    skip: tuple[str | None, ...] = (),
) -> dict[str, Any]:
    """`clean_attributes` with the names' part done: `plan` is `key_plan` of `attrs`' names in
    their order (OTLP ingest keeps one per set of names)."""
    r = redactor(redact)
    text = r.text
    # the redactor's memory of short values, read before calling it (a method call costs more
    # than the lookup it makes)
    short_texts = r.short_texts
    out: dict[str, Any] = {}
    for (k, v), (key, secret) in zip(attrs.items(), plan, strict=True):
        if k in skip:
            continue
        kind = type(v)
        if kind is str:  # the ingest hot path: exact types first, no isinstance chain
            if v and secret:
                out[key] = REDACTED
                continue
            known = short_texts.get(v)
            v = text(v) if known is None else known
            # most values are short ASCII: nothing to clean, no call
            short = len(v) <= MAX_TEXT_BYTES and v.isascii() and "\x00" not in v
            out[key] = v if short else clean_text(v) or ""
        elif v is None or kind is int or kind is bool:
            out[key] = v
        else:
            out[key] = _clean_value(v, key, r)
    return out


def _clean_value(v: Any, key: str, r: Redactor) -> Any:
    if isinstance(v, bool | int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if v and r.is_secret_key(key):
        return REDACTED
    if isinstance(v, str):
        return clean_text(r.text(v)) or ""
    return json_safe(r.value(v))


def redact_text(text: str | None, redact: tuple[str, ...]) -> str | None:
    """`text` with its secrets redacted (whatever its size), then cleaned and cut to size."""
    if not text:
        return None
    return clean_text(redactor(redact).text(text))


def json_obj(value: Any) -> dict[str, Any] | None:
    """A mapping given as a mapping or as JSON text (Langfuse's usage and cost details)."""
    if value is None:  # the usual case, decided before an ABC isinstance check
        return None
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, str) and value.lstrip().startswith("{") and len(value) < 100_000:
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return None
        if isinstance(parsed, dict):
            return parsed
    return None
