"""What the integrations send tether beside a framework's own bytes: JSON previews of values
(bounded in size, never raising) and tether's error replies turned back into TetherErrors."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

import httpx

from tether.core.errors import ERROR_TYPES, TetherError

MAX_TEXT = 2000
MAX_ITEMS = 100
MAX_DEPTH = 8

_BY_TYPE: dict[str, type[TetherError]] = {e.type: e for e in ERROR_TYPES}


def view(value: Any, depth: int = 0) -> Any:
    """A JSON preview of `value` for people (the timeline, approvals): models as their fields,
    long texts and lists cut, anything else its repr. Never raises."""
    try:
        return _view(value, depth)
    except Exception:  # a preview must never break a checkpoint; show that it failed
        return f"<{type(value).__name__}: no preview>"


def _view(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + f"… ({len(value)} chars)"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if depth >= MAX_DEPTH:
        return f"<{type(value).__name__}>"
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {str(k): _view(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            out["…"] = f"{len(items) - MAX_ITEMS} more"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        out_list = [_view(v, depth + 1) for v in seq[:MAX_ITEMS]]
        if len(seq) > MAX_ITEMS:
            out_list.append(f"… {len(seq) - MAX_ITEMS} more")
        return out_list
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic models, LangChain messages
        return _view(dump(mode="json"), depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _view({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, depth + 1)
    text = repr(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def jsonable(value: Any) -> Any:
    """`value` as JSON types, for metadata that must round-trip exactly when it is JSON already."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return view(value)


def raise_for(resp: httpx.Response) -> None:
    """tether's `{"error": {...}}` reply as the TetherError of its type (402 is
    BudgetExceededError, 409 run_killed RunKilledError, ...)."""
    if resp.status_code >= 400:
        raise_for_reply(resp.status_code, resp.content)


def raise_for_reply(status: int, content: bytes) -> None:
    """`raise_for` of a reply read without httpx (its status and body)."""
    if status < 400:
        return
    try:
        err = json.loads(content)["error"]
        cls = _BY_TYPE.get(str(err.get("type")), TetherError)
        raise cls(str(err.get("message")), code=err.get("code"))
    except (ValueError, KeyError, TypeError, AttributeError):
        text = content.decode("utf-8", "replace")[:200]
        raise TetherError(f"tether answered HTTP {status}: {text}") from None
