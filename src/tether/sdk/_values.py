"""Attribute names the SDK writes (tether's ingest conventions, OpenInference and OTel GenAI) and
how Python values become span attribute text (JSON, bounded in size)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode

AGENT = "tether.agent"
AGENT_VERSION = "tether.agent_version"
TASK_ID = "tether.task_id"
USER = "tether.user"
RUN_ID = "tether.run_id"
PARENT_RUN_ID = "tether.parent_run_id"
SPAN_KIND = "openinference.span.kind"
INPUT = "input.value"
INPUT_MIME = "input.mime_type"
OUTPUT = "output.value"
OUTPUT_MIME = "output.mime_type"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
SYSTEM = "gen_ai.system"
OPERATION = "gen_ai.operation.name"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TOOL_NAME = "tool.name"
TOOL_TAGS = "tether.tool.tags"
TOOL_IRREVERSIBLE = "tether.tool.irreversible"
DECISION = "tether.decision"
DECISION_RULE = "tether.decision.rule"
DECISION_REASON = "tether.decision.reason"
APPROVAL_ID = "tether.approval_id"
ERROR_TYPE = "error.type"

MAX_VALUE_CHARS = 100_000
JSON_MIME = "application/json"
TEXT_MIME = "text/plain"


def _fallback(value: Any) -> Any:
    # pydantic models; looked up on the class so that a mock's invented attribute is not called
    if callable(getattr(type(value), "model_dump", None)):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


def to_text(value: Any) -> tuple[str, str]:
    """`(text, mime type)` for a span's input or output: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        text, mime = value, TEXT_MIME
    else:
        text = _dumps(value)
        mime = JSON_MIME
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + "...[truncated]"
    return text, mime


def to_jsonable(value: Any) -> Any:
    """`value` as plain JSON data (what `/api/v1/decide` receives as tool arguments)."""
    return json.loads(_dumps(value))


def _dumps(value: Any) -> str:
    """JSON text of anything an agent passes; never raises into the agent."""
    try:
        return json.dumps(value, default=_fallback, ensure_ascii=False)
    except Exception:  # self-referencing mocks, a raising __repr__, deep nesting
        return json.dumps(_safe_repr(value))


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)[:MAX_VALUE_CHARS]
    except Exception:  # a __repr__ that raises
        return f"<{type(value).__name__}>"


def set_io(span: Span, key: str, mime_key: str, value: Any) -> None:
    if value is None:
        return
    text, mime = to_text(value)
    span.set_attribute(key, text)
    span.set_attribute(mime_key, mime)


def clean(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Drops None values (OpenTelemetry refuses them) and stringifies what it cannot store."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, str | bool | int | float):
            out[k] = v
        elif isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
            out[k] = list(v)
        else:
            out[k] = to_text(v)[0]
    return out


def error_text(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def mark_error(span: Span, exc: BaseException) -> None:
    """Marks `span` failed with the exception's type and message (the span is not ended)."""
    span.set_status(Status(StatusCode.ERROR, error_text(exc)))
    span.set_attribute(ERROR_TYPE, type(exc).__name__)
    span.record_exception(exc, escaped=True)
