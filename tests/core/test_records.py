from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime

import pytest

from tether.core.records import RunAttribution, SpanRecord, span_record

T0 = datetime(2025, 11, 25, 12, tzinfo=UTC)


def test_span_record_is_the_dataclass_built_without_its_init() -> None:
    values = {f.name: getattr(SpanRecord("t" * 32, "s" * 16, "run_x", "llm", "n", T0), f.name)
              for f in fields(SpanRecord)}  # fmt: skip
    values.update(model="gpt-4o", input_tokens=3, attributes={"k": "v"},
                  attribution=RunAttribution(agent="a"))  # fmt: skip
    fast, slow = span_record(**values), SpanRecord(**values)
    assert fast == slow and repr(fast) == repr(slow) and type(fast) is SpanRecord
    assert replace(fast, name="m") == replace(slow, name="m")
    with pytest.raises(AttributeError):
        fast.name = "changed"  # type: ignore[misc]  # still frozen


def test_span_record_refuses_a_missing_or_unknown_field() -> None:
    values = {f.name: None for f in fields(SpanRecord)}
    with pytest.raises(TypeError):
        span_record(**{k: v for k, v in values.items() if k != "model"})
    with pytest.raises(TypeError):
        span_record(**values, extra=1)
