"""Text hygiene for ingested spans: JSON-safe attribute values, redaction of secret-looking keys,
removal of characters no database stores (NUL, lone surrogates), truncation of huge text."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

MAX_TEXT_BYTES = 64 * 1024
REDACTED = "[REDACTED]"
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


@lru_cache(maxsize=4096)
def is_secret_key(key: str, redact: tuple[str, ...]) -> bool:
    low = key.lower()
    return any(f and f in low for f in redact)


@lru_cache(maxsize=4096)
def _clean_key(key: str) -> str:
    return clean_text(key, 1000) or ""


def _redact(value: Any, redact: tuple[str, ...], depth: int = 0) -> tuple[Any, bool]:
    """Secret-named entries with string or structured values become REDACTED; numbers stay."""
    if depth >= _MAX_DEPTH:
        return value, False
    changed = False
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if is_secret_key(str(k), redact) and not isinstance(v, bool | int | float) and v:
                out[k], changed = REDACTED, True
            else:
                out[k], c = _redact(v, redact, depth + 1)
                changed = changed or c
        return out, changed
    if isinstance(value, list):
        items = []
        for v in value:
            nv, c = _redact(v, redact, depth + 1)
            items.append(nv)
            changed = changed or c
        return items, changed
    return value, False


def clean_attributes(
    attrs: Mapping[str, Any], redact: tuple[str, ...], skip: tuple[str | None, ...] = ()
) -> dict[str, Any]:
    """JSON-safe, redacted, truncated copy of a span's (or resource's) attributes."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if k in skip:
            continue
        key = _clean_key(k) if isinstance(k, str) else _clean_key(str(k))
        if v is None or isinstance(v, bool | int):
            out[key] = v
        elif isinstance(v, float):
            out[key] = v if math.isfinite(v) else str(v)
        elif is_secret_key(key, redact) and v:
            out[key] = REDACTED
        elif isinstance(v, str):
            out[key] = redact_text(v, redact) or ""
        else:
            out[key] = _redact(json_safe(v), redact)[0]
    return out


def redact_text(text: str | None, redact: tuple[str, ...]) -> str | None:
    """Redacts secret-named keys inside JSON text (tool arguments, messages), then cleans it."""
    if not text:
        return None
    if redact and text.lstrip()[:1] in ("{", "[") and len(text) <= 4 * MAX_TEXT_BYTES:
        low = text.lower()
        if any(f and f in low for f in redact):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            except RecursionError:
                parsed = None
            if parsed is not None:
                redacted, changed = _redact(parsed, redact)
                if changed:
                    text = json.dumps(redacted, ensure_ascii=False, separators=(",", ":"))
    return clean_text(text)


def json_obj(value: Any) -> dict[str, Any] | None:
    """A mapping given as a mapping or as JSON text (Langfuse's usage and cost details)."""
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
