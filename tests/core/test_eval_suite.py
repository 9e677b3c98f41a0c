"""The eval suite YAML: a valid suite parses; every mistake is reported with its line and a fix."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.eval_suite import SuiteError, parse_suite

GOOD = """\
suite: refunds
agent: support-bot
target_cost_usd: 0.05
repeats: 2
judge: {model: judge-mini, repeats: 3}
tasks:
  - id: refund-small
    input: "Refund order 1234"
    fixtures: {tools: {crm.lookup: {status: paid}}, llm: [{content: ok}]}
    assert:
      - {name: looked up, tool_called: crm.lookup, args: {order_id: "1234"}, at_most: 2}
      - {name: no mail, tool_not_called: mail.send}
      - {name: order, tools_in_order: [crm.lookup, crm.refund]}
      - {name: clean, no_policy_denial: true}
      - {name: cheap, max_cost_usd: 0.02}
      - {name: json, output_schema: {type: object, required: [refund_id]}}
      - {name: polite, judge: {rubric: "Is the reply polite?", threshold: 0.7}}
  - id: refund-json
    input: {order: 99}
    assert:
      - {name: said done, output_contains: refunded}
      - {name: checker, output_predicate: "checks.refunds:ok"}
"""


def test_a_valid_suite_parses() -> None:
    suite = parse_suite(GOOD)
    assert (suite.suite, suite.agent, suite.repeats, str(suite.target_cost_usd)) == (
        "refunds",
        "support-bot",
        2,
        "0.05",
    )
    first = suite.tasks[0]
    assert [a.kind for a in first.assertions][:3] == [
        "tool_called",
        "tool_not_called",
        "tools_in_order",
    ]
    assert first.fixtures.tools == {"crm.lookup": {"status": "paid"}}
    assert suite.tasks[1].input == {"order": 99}
    assert first.assertions[-1].judge is not None and first.assertions[-1].judge.threshold == 0.7


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "at_most: 2}",
            "at_mots: 2}",
            "f.yaml:11: tasks[0].assert[0].at_mots: unknown key "
            "`at_mots`. Fix: did you mean `at_most`?",
        ),
        ("max_cost_usd: 0.02", "max_cost_usd: -1", "f.yaml:15: tasks[0].assert[4].max_cost_usd:"),
        (
            "{name: no mail, tool_not_called: mail.send}",
            "{name: no mail, tool_not_called: mail.send, no_kill: true}",
            "f.yaml:12: tasks[0].assert[1]: an assertion has exactly one kind",
        ),
        (
            "{name: clean, no_policy_denial: true}",
            "{name: clean, no_kill: true, at_most: 1}",
            "only qualify tool_called",
        ),
        ("checks.refunds:ok", "not a function", "f.yaml:22: tasks[1].assert[1].output_predicate"),
        ("{type: object, required: [refund_id]}", "{type: 12}", "not a valid JSON schema"),
        ("id: refund-json", "id: refund-small", "task id(s) refund-small appear twice"),
        ("{name: no mail", "{name: looked up", "assertion name(s) looked up appear twice"),
        ("repeats: 2", "repeats: 0", "f.yaml:4: repeats:"),
        ("suite: refunds\n", "suite: refunds\nsuite: again\n", "f.yaml:2: suite: duplicate key"),
        ('input: "Refund order 1234"', "input: [unclosed", "f.yaml:9: (yaml)"),
    ],
)
def test_errors_name_the_line_and_the_fix(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(SuiteError) as err:
        parse_suite(GOOD.replace(old, new, 1), "f.yaml")
    assert expected in err.value.message
    assert "Fix: " in err.value.message
    assert err.value.code == "invalid_suite"


def test_not_a_mapping() -> None:
    with pytest.raises(SuiteError) as err:
        parse_suite("- a\n- b\n", "x.yaml")
    assert err.value.message.startswith("x.yaml:1: (document): the suite must be a YAML mapping")


@settings(max_examples=60)
@given(st.text(max_size=200))
def test_any_text_parses_or_raises_suite_error(text: str) -> None:
    try:
        parse_suite(text)
    except SuiteError as exc:
        assert exc.problems and all(p.line >= 1 for p in exc.problems)
