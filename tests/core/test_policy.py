"""The boundary policy: parsing with line-numbered errors, and the decision engine's semantics."""

from __future__ import annotations

import fnmatch
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.budget import Limits, RunLimits
from tether.core.policy import (
    DecisionRequest,
    Policy,
    PolicyError,
    RateState,
    RunState,
    decide,
    glob_regex,
    lint,
    with_rate_result,
)
from tether.core.policy_schema import PolicyModel

EXAMPLE = """\
agent: invoice-triage
owner: finance-platform
models: [gpt-4o-mini]
budgets:
  run: {max_cost_usd: 2.00, max_tokens: 50000, max_llm_calls: 25, max_tool_calls: 3,
        max_duration_s: 600}
  day: {max_cost_usd: 50}
  user_day: {max_cost_usd: 5}
tools:
  - {match: "erp.delete_*", allow: false, reason: "deletes go through the ERP UI"}
  - {match: "erp.*", allow: true}
  - {match: "mail.send", approval: required, rate_limit: "10/hour"}
  - {match: "web.fetch", tags: [untrusted], rate_limit: "2/minute"}
  - {match: "web.post", tags: [egress]}
  - {match: "time.*"}
data_flow:
  - {after_tag: untrusted, require_approval_for_tag: egress}
on_uncertain: ask
approval: {timeout_s: 600, default: deny}
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.parse(EXAMPLE, "triage.yaml")


def req(
    tool: str,
    tags: tuple[str, ...] = (),
    seen: tuple[str, ...] = (),
    calls: int = 0,
    rate: RateState | None = None,
    agent: str = "invoice-triage",
) -> DecisionRequest:
    return DecisionRequest(
        agent, tool, frozenset(tags), {}, RunState(frozenset(seen), tool_calls=calls), rate
    )


CASES = [
    # (tool, tags, tags_seen, outcome, rule)
    ("erp.lookup", (), (), "allow", 'tools[1] match "erp.*"'),
    ("erp.delete_invoice", (), (), "deny", 'tools[0] match "erp.delete_*"'),
    ("mail.send", (), (), "approval_required", 'tools[2] match "mail.send"'),
    ("time.now", (), (), "allow", 'tools[5] match "time.*"'),
    ("crm.lookup", (), (), "approval_required", "on_uncertain: ask"),
    ("crm.wipe", ("irreversible",), (), "approval_required", "tag irreversible (no explicit rule)"),
    # an explicit rule wins over the irreversible tag
    ("erp.archive", ("irreversible",), (), "allow", 'tools[1] match "erp.*"'),
    # data flow: egress after untrusted content needs approval, egress before it does not
    ("web.post", (), (), "allow", 'tools[4] match "web.post"'),
    ("web.post", (), ("untrusted",), "approval_required", "data_flow[0] after untrusted -> egress"),
    (
        "erp.export",
        ("egress",),
        ("untrusted",),
        "approval_required",
        "data_flow[0] after untrusted -> egress",
    ),
    ("erp.export", ("egress",), ("read",), "allow", 'tools[1] match "erp.*"'),
    # deny stays deny whatever the run saw
    ("erp.delete_all", ("egress",), ("untrusted",), "deny", 'tools[0] match "erp.delete_*"'),
]


@pytest.mark.parametrize(("tool", "tags", "seen", "outcome", "rule"), CASES)
def test_decision_table(
    policy: Policy, tool: str, tags: tuple[str, ...], seen: tuple[str, ...], outcome: str, rule: str
) -> None:
    d = decide(policy, req(tool, tags, seen))
    assert (d.outcome, d.rule) == (outcome, rule)
    assert d.reason


def test_deny_reason_and_rule_tags(policy: Policy) -> None:
    assert decide(policy, req("erp.delete_x")).reason == "deletes go through the ERP UI"
    fetched = decide(policy, req("web.fetch"))
    assert fetched.outcome == "allow" and "untrusted" in fetched.tags
    assert fetched.rate_limit is not None and fetched.rate_limit.count == 2
    assert fetched.rate_limit.window_s == 60


@pytest.mark.parametrize(
    ("on_uncertain", "tags", "outcome"),
    [
        ("ask", (), "approval_required"),
        ("deny", (), "deny"),
        ("deny", ("irreversible",), "deny"),
        ("allow", (), "allow"),
        ("allow", ("irreversible",), "approval_required"),
        ("allow", ("egress",), "allow"),
    ],
)
def test_on_uncertain(on_uncertain: str, tags: tuple[str, ...], outcome: str) -> None:
    p = Policy.parse(f"agent: a\non_uncertain: {on_uncertain}\n")
    assert decide(p, req("x.y", tags, agent="a")).outcome == outcome


def test_uncertain_allow_still_applies_data_flow() -> None:
    p = Policy.parse(
        "agent: a\non_uncertain: allow\ndata_flow:\n"
        "  - {after_tag: untrusted, require_approval_for_tag: egress}\n"
    )
    d = decide(p, req("mail.send", ("egress",), ("untrusted",), agent="a"))
    assert d.outcome == "approval_required" and d.rule.startswith("data_flow[0]")


def test_no_policy_wrong_agent_and_tool_call_cap(policy: Policy) -> None:
    assert decide(None, req("erp.x")).outcome == "deny"
    assert "tether policy apply" in decide(None, req("erp.x")).reason
    assert decide(policy, req("erp.x", agent="other")).rule == "agent mismatch"
    assert decide(policy, req("erp.x", calls=2)).outcome == "allow"
    capped = decide(policy, req("erp.x", calls=3))
    assert (capped.outcome, capped.rule) == ("deny", "budgets.run.max_tool_calls")


def test_rate_state_input(policy: Policy) -> None:
    under = decide(policy, req("mail.send", rate=RateState(9)))
    assert under.outcome == "approval_required"
    over = decide(policy, req("mail.send", rate=RateState(10, retry_after_s=12.5)))
    assert over.outcome == "rate_limited" and over.retry_after_s == 12.5
    assert over.rule == 'tools[2] match "mail.send" rate_limit 10/hour'
    # rate state is ignored for a tool without a limit, and never turns a deny into anything else
    assert decide(policy, req("erp.x", rate=RateState(99))).outcome == "allow"
    denied = decide(policy, req("erp.delete_x"))
    assert with_rate_result(denied, False, 3.0) is denied


def test_budget_limits_and_models(policy: Policy) -> None:
    assert policy.budget_limits() == Limits(
        run=RunLimits(Decimal("2.00"), 50000, 25, 600),
        agent_day_usd=Decimal("50"),
        user_day_usd=Decimal("5"),
    )
    assert policy.allows_model("gpt-4o-mini") and not policy.allows_model("gpt-4o")
    assert Policy.parse("agent: a\n").allows_model("anything")
    assert policy.approval_timeout_s == 600 and policy.approval_default == "deny"
    assert policy.memory_read_grants == ()


def test_systems_and_memory_are_enforced_so_accepted() -> None:
    source = "agent: a\ntools: []\nsystems: {read: [erp.invoices]}\nmemory: {namespace: a}\n"
    policy = Policy.parse(source, "a.yaml")
    assert policy.systems_read == ("erp.invoices",) and policy.memory_namespace == "a"
    with pytest.raises(PolicyError, match=r"a.yaml:2: systems.write\[0\]: string should match"):
        Policy.parse("agent: a\nsystems: {write: ['bad system']}\n", "a.yaml")


SYSTEMS = """\
agent: triage
systems: {read: [erp.invoices, mail.inbox], write: [erp.flags, "crm.*"]}
tools:
  - {match: "*", allow: true}
"""


@pytest.mark.parametrize(
    ("tool", "tags", "systems", "outcome", "rule"),
    [
        ("erp.list_invoices", {"read"}, {"erp.invoices"}, "allow", 'tools[0] match "*"'),
        ("erp.flag_invoice", {"write"}, {"erp.flags"}, "allow", 'tools[0] match "*"'),
        ("erp.void_invoice", {"irreversible"}, {"erp.invoices"}, "deny", "systems.write"),
        ("mail.read", set(), {"mail.inbox"}, "allow", 'tools[0] match "*"'),
        ("mail.send", {"egress"}, {"mail.outbox"}, "deny", "systems.write"),
        ("hr.salaries", {"read"}, {"hr"}, "deny", "systems.read"),
        ("crm.note", {"write"}, {"crm.notes"}, "allow", 'tools[0] match "*"'),  # a glob grant
        ("erp.flags_read", set(), {"erp.flags"}, "allow", 'tools[0] match "*"'),  # write reads
        ("odd.tool", set(), set(), "deny", "systems.read"),
    ],
)
def test_systems_bound_what_tools_may_read_and_write(
    tool: str, tags: set[str], systems: set[str], outcome: str, rule: str
) -> None:
    policy = Policy.parse(SYSTEMS)
    d = decide(policy, DecisionRequest("triage", tool, frozenset(tags), systems=frozenset(systems)))
    assert (d.outcome, d.rule) == (outcome, rule), d.reason
    if tool == "mail.send":
        assert d.reason == (
            "mail.send writes to mail.outbox, outside this policy's systems.write (erp.flags, "
            "crm.*); add the system under `systems: write:` if the agent may"
        )


def test_an_unknown_memory_embedder_is_refused_with_its_line() -> None:
    source = "agent: a\nmemory:\n  namespace: a\n  embedder: locl:all-MiniLM-L6-v2\n"
    with pytest.raises(PolicyError, match=r"a.yaml:4: .*embedder 'locl:all-MiniLM-L6-v2' is not"):
        Policy.parse(source, "a.yaml")
    for ok in ("local:all-MiniLM-L6-v2", "gateway:text-embedding-3-small", "client"):
        Policy.parse(f"agent: a\nmemory: {{embedder: '{ok}'}}\n")


def test_decision_to_dict(policy: Policy) -> None:
    d = decide(policy, req("mail.send")).to_dict()
    assert d == {
        "outcome": "approval_required",
        "rule": 'tools[2] match "mail.send"',
        "reason": "mail.send needs a person's approval",
        "retry_after_s": None,
        "tags": [],
        "rate_limit": "10/hour",
        "finding": None,
    }


# ---------------------------------------------------------------- parse errors

BAD = [
    (
        "agent: a\ntools:\n  - {match: x, aprroval: required}\n",
        3,
        "tools[0].aprroval",
        "did you mean `approval`?",
    ),
    (
        "agent: a\ntools:\n  - {match: x}\n  - match: y\n    rate_limit: 10 per hour\n",
        5,
        "tools[1].rate_limit",
        'write it like "10/hour"',
    ),
    (
        "agent: a\nbudgets:\n  run:\n    max_cost_usd: -1\n",
        4,
        "budgets.run.max_cost_usd",
        "use 0 or a positive number",
    ),
    ("agent: a\non_uncertain: maybe\n", 2, "on_uncertain", "use one of the values listed"),
    ("owner: x\n", 1, "agent", "add `agent: ...`"),
    (
        "agent: a\nbudgets:\n  weekly: {max_cost_usd: 3}\n",
        3,
        "budgets.weekly",
        "allowed keys here: day, run, user_day",
    ),
    (
        "agent: a\ntools:\n  - {match: x, rate_limit: 0/hour}\n",
        3,
        "tools[0].rate_limit",
        "allow: false",
    ),
    ("agent: a\nagent: b\n", 2, "agent", "keep one `agent:`"),
    ("agent: a\ntools: [\n", 3, "(yaml)", "correct the YAML syntax"),
    ("- just\n- a list\n", 1, "(document)", "start with `agent: NAME`"),
    ("agent: 'has space'\n", 1, "agent", "use letters, digits"),
]


@pytest.mark.parametrize(("source", "line", "field", "fix"), BAD)
def test_errors_name_line_field_and_fix(source: str, line: int, field: str, fix: str) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.parse(source, "p.yaml")
    first = info.value.problems[0]
    assert (first.line, first.field) == (line, field)
    assert fix in first.fix
    text = info.value.message.splitlines()[0]
    assert text.startswith(f"p.yaml:{line}: {field}: ") and ". Fix: " in text
    assert info.value.http_status == 400
    assert info.value.details["errors"][0]["line"] == line


def test_every_problem_is_reported() -> None:
    src = "agent: a\non_uncertain: nope\ntools:\n  - {match: x, allow: maybe}\n"
    with pytest.raises(PolicyError) as info:
        Policy.parse(src, "p.yaml")
    assert [p.line for p in info.value.problems] == [2, 4]


def test_shadowed_rules_are_errors_not_warnings() -> None:
    src = "agent: a\ntools:\n  - {match: 'erp.*'}\n  - {match: 'erp.delete_*', allow: false}\n"
    with pytest.raises(PolicyError) as info:
        Policy.parse(src, "p.yaml")
    [problem] = info.value.problems
    assert (problem.line, problem.field) == (4, "tools[1]") and "tools[0]" in problem.problem
    ordered = "agent: a\ntools:\n  - {match: 'erp.delete_*'}\n  - {match: 'erp.*'}\n"
    assert lint(Policy.parse(ordered), ordered) == []
    # an earlier rule with argument conditions does not shadow: it applies only sometimes
    conditional = (
        "agent: a\ntools:\n  - {match: 'erp.*', when: {id: {equals: x}}}\n"
        "  - {match: 'erp.delete_*', allow: false}\n"
    )
    assert Policy.parse(conditional).tools[1].match == "erp.delete_*"


# ---------------------------------------------------------------- properties

_NAME = st.text(alphabet="abcxyz._-*?[]!", max_size=12)


@given(pattern=_NAME, name=st.text(alphabet="abcxyz._-", max_size=12))
@settings(max_examples=400, deadline=None)
def test_compiled_glob_agrees_with_fnmatch(pattern: str, name: str) -> None:
    import re

    ours = re.fullmatch(glob_regex(pattern), name) is not None
    assert ours == fnmatch.fnmatchcase(name, pattern)


@given(
    patterns=st.lists(st.text(alphabet="abxy.*?", min_size=1, max_size=6), min_size=1, max_size=8),
    name=st.text(alphabet="abxy.", max_size=8),
)
@settings(max_examples=300, deadline=None)
def test_first_matching_rule_wins(patterns: list[str], name: str) -> None:
    # built without cross_check, which refuses shadowed rules: this is about rule_for itself
    doc = {"agent": "a", "tools": [{"match": p} for p in patterns]}
    rule = Policy.from_model(PolicyModel.model_validate(doc), "").rule_for(name)
    expected = next((i for i, p in enumerate(patterns) if fnmatch.fnmatchcase(name, p)), None)
    assert (rule.index if rule else None) == expected


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_parse_never_crashes_on_text(source: str) -> None:
    try:
        Policy.parse(source, "fuzz.yaml")
    except PolicyError as exc:
        assert exc.problems and all(p.line >= 1 for p in exc.problems)


_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.floats(allow_nan=False)
)
_yamlish = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "agent",
                    "tools",
                    "match",
                    "allow",
                    "budgets",
                    "run",
                    "rate_limit",
                    "approval",
                    "on_uncertain",
                    "x",
                ]
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


@given(_yamlish)
@settings(max_examples=300, deadline=None)
def test_parse_never_crashes_on_structures(doc: object) -> None:
    import yaml

    try:
        Policy.parse(yaml.safe_dump(doc), "fuzz.yaml")
    except PolicyError as exc:
        assert exc.problems


def test_alias_bomb_and_deep_nesting_are_refused() -> None:
    bomb = (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
        + "agent: x\n"
    )
    with pytest.raises(PolicyError) as info:
        Policy.parse(bomb, "bomb.yaml")
    assert "too large" in info.value.message
    with pytest.raises(PolicyError):
        Policy.parse("agent: a\nx: " + "[" * 80 + "]" * 80 + "\n")
