"""Assertions over a recorded run: tool calls with argument matchers, order and counts; refusals,
kills and held calls; cost, calls, tokens, duration; output checks."""

from __future__ import annotations

import json

import pytest

from tether.core.assertions import Observed, Result, ToolCall, evaluate
from tether.core.eval_suite import AssertionModel

RUN = Observed(
    status="succeeded",
    output=json.dumps({"refund_id": "r-1", "amount": 12}),
    cost_nusd=15_000_000,
    llm_calls=3,
    input_tokens=900,
    output_tokens=200,
    duration_s=2.5,
    tool_calls=(
        ToolCall("crm.lookup", {"order_id": "1234"}),
        ToolCall("crm.lookup", {"order_id": 1234}),
        ToolCall("crm.refund", {"order_id": "1234", "to": "ann@example.com"}),
        ToolCall("mail.send", {"to": "ann@example.com"}, outcome="deny", ok=False),
    ),
    policy_denials=1,
)


def one(spec: dict[str, object], obs: Observed = RUN) -> Result:
    (r,) = evaluate([AssertionModel.model_validate({"name": "x", **spec})], obs)
    return r


@pytest.mark.parametrize(
    ("spec", "passed", "reason"),
    [
        ({"tool_called": "crm.lookup", "args": {"order_id": "1234"}}, True, "2 time(s)"),
        ({"tool_called": "crm.lookup", "at_most": 1}, False, "at most 1 allowed"),
        ({"tool_called": "crm.refund", "args": {"order_id": "9"}}, False, "other arguments"),
        ({"tool_called": "crm.refund", "args_match": {"to": r"@example\.com$"}}, True, ""),
        ({"tool_called": "crm.void"}, False, "tools called: crm.lookup, crm.refund, mail.send"),
        ({"tool_not_called": "mail.send"}, False, "was called 1 time(s)"),
        ({"tool_not_called": "crm.delete"}, True, "was not called"),
        ({"tools_in_order": ["crm.lookup", "crm.refund"]}, True, "in order"),
        ({"tools_in_order": ["crm.refund", "crm.lookup"]}, False, "missing from crm.lookup"),
        ({"no_policy_denial": True}, False, "1 policy denial"),
        ({"no_budget_refusal": True}, True, "0 budget"),
        ({"no_kill": True}, True, "not killed"),
        ({"no_pending_approval": True}, True, "0 held"),
        ({"max_cost_usd": "0.01"}, False, "cost $0.015 > $0.01"),
        ({"max_cost_usd": "0.02"}, True, "<="),
        ({"max_llm_calls": 3}, True, "3 LLM call(s)"),
        ({"max_tokens": 1000}, False, "1100 tokens"),
        ({"max_duration_s": 2}, False, "took 2.50s"),
        ({"output_contains": "r-1"}, True, "contains"),
        ({"output_matches": r'"amount": \d+'}, True, "matches"),
        ({"output_equals": {"refund_id": "r-1", "amount": 12}}, True, "equals"),
        ({"output_equals": "nope"}, False, "!="),
        ({"output_schema": {"type": "object", "required": ["reason"]}}, False, "'reason' is a"),
        (
            {"output_schema": {"type": "object", "properties": {"amount": {"type": "integer"}}}},
            True,
            "fits",
        ),
    ],
)
def test_builtin_assertions(spec: dict[str, object], passed: bool, reason: str) -> None:
    r = one(spec)
    assert r.passed is passed, r.reason
    assert reason in r.reason


def test_kills_and_missing_output_and_external_results() -> None:
    killed = Observed(status="killed", killed=True, kill_reason="budget: max_cost_usd")
    assert one({"no_kill": True}, killed).reason == "run killed: budget: max_cost_usd"
    assert one({"output_contains": "x"}, killed).reason == "the run recorded no output"
    assert one({"max_duration_s": 5}, killed).passed is False
    judge = AssertionModel.model_validate({"name": "polite", "judge": {"rubric": "polite?"}})
    (missing,) = evaluate([judge], RUN)
    assert not missing.passed and missing.reason == "was not evaluated"
    given = Result("polite", "judge", True, "3/3 judges passed")
    assert evaluate([judge], RUN, {"polite": given}) == [given]
