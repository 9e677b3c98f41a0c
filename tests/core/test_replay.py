from __future__ import annotations

import json

from tether.core.replay import Compared, first_divergence, llm_steps, messages_of, normalise


def test_messages_of_reads_what_the_gateway_records() -> None:
    recorded = json.dumps({"messages": [{"role": "user", "content": "hi"}], "tools": ["x"]})
    assert messages_of(recorded) == [{"role": "user", "content": "hi"}]
    assert messages_of("not json") is None
    assert messages_of(json.dumps({"input": "embed me"})) is None
    assert messages_of(None) is None


def test_first_divergence_ignores_case_and_spacing() -> None:
    rows = [Compared(1, "chat a", "Hello  world", "hello world"),
            Compared(2, "chat a", "call refund", "call lookup"),
            Compared(3, "chat a", "x", "y")]  # fmt: skip
    assert rows[0].same and not rows[1].same
    assert first_divergence(rows) == rows[1]
    assert first_divergence(rows[:1]) is None
    assert normalise(None) == ""


def test_llm_steps_keeps_only_replayable_model_calls() -> None:
    ok = {"kind": "llm", "input": json.dumps({"messages": [{"role": "user", "content": "q"}]})}
    steps = [{"kind": "tool", "input": "{}"}, ok, {"kind": "embedding", "input": "{}"},
             {"kind": "llm", "input": "cut short..."}]  # fmt: skip
    assert llm_steps(steps) == [ok]
