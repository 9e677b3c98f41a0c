"""Argument conditions in tool rules and provenance data-flow rules: semantics, reasons that name
the argument and the condition, and line-numbered validation that cannot silently disable a rule."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.policy import DecisionRequest, Policy, PolicyError, RunState, decide
from tether.core.provenance import Finding

PAYMENTS = """\
agent: payer
lists:
  payees: ["DE89 3704 0044 0532 0130 00", GB82WEST12345698765432]
  contacts: [Ada@Example.com, bob@partner.example]
  allowed_domains: [example.com]
tools:
  - match: "pay.transfer"
    when: {amount: {max: 500}, iban: {in_list: payees}}
    allow: true
  - match: "pay.transfer"
    when: {iban: {not_in_list: payees}}
    allow: false
    reason: "transfers go only to known payees"
  - {match: "pay.transfer", approval: required}
  - {match: "mail.send", when: {to: {in_list: contacts}}, allow: true, tags: [egress]}
  - {match: "mail.send", when: {to: {domain_in_list: allowed_domains}}, allow: true}
  - {match: "mail.send", approval: required, tags: [egress]}
  - {match: "web.fetch", when: {url: {domain: [docs.example.org]}}, allow: true}
  - {match: "web.fetch", when: {url: {regex: "https://[a-z.]+/status"}}, allow: true}
  - {match: "files.*", when: {path: {glob: "/shared/*"}, mode: {in: [read, list]}}, allow: true}
  - {match: "chat.post", when: {channel: {equals: "#support"}}, allow: true}
on_uncertain: deny
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.parse(PAYMENTS, "payer.yaml")


def call(policy: Policy, tool: str, **arguments: Any) -> Any:
    return decide(policy, DecisionRequest("payer", tool, arguments=arguments))


def test_numeric_bounds_and_named_lists_normalised(policy: Policy) -> None:
    # an IBAN written with spaces and lower case is the same payee
    ok = call(policy, "pay.transfer", amount="120.50", iban="gb82 west 1234 5698 7654 32")
    assert ok.outcome == "allow" and ok.rule.startswith('tools[0] match "pay.transfer" when')
    big = call(policy, "pay.transfer", amount=900, iban="DE89370400440532013000")
    assert big.outcome == "approval_required" and big.rule.startswith("tools[2]")
    assert "argument `amount` = 900 fails <= 500" in big.reason
    stranger = call(policy, "pay.transfer", amount=10, iban="FR1420041010050500013M02606")
    assert stranger.outcome == "deny" and stranger.reason == "transfers go only to known payees"
    assert stranger.rule.startswith("tools[1]") and "iban not in list payees" in stranger.rule


def test_missing_argument_satisfies_no_condition(policy: Policy) -> None:
    d = call(policy, "pay.transfer", amount=10)
    assert d.outcome == "approval_required"
    assert "argument `iban` is missing" in d.reason


def test_email_list_domain_and_list_arguments(policy: Policy) -> None:
    assert call(policy, "mail.send", to=" ADA@example.com").outcome == "allow"
    assert call(policy, "mail.send", to="carol@sub.example.com").rule.startswith("tools[4]")
    assert call(policy, "mail.send", to=["ada@example.com", "bob@partner.example"]).allowed
    # every recipient of a list must pass
    held = call(policy, "mail.send", to=["ada@example.com", "eve@evil.example"])
    assert held.outcome == "approval_required" and held.rule.startswith("tools[5]")
    assert call(policy, "mail.send", to=[]).outcome == "approval_required"


def test_url_domain_regex_glob_in_equals(policy: Policy) -> None:
    assert call(policy, "web.fetch", url="https://api.docs.example.org/x").allowed
    assert call(policy, "web.fetch", url="https://docs.example.org.evil.com/x").outcome == "deny"
    assert call(policy, "web.fetch", url="https://example.net/status").allowed
    assert call(policy, "web.fetch", url="https://example.net/status/../admin").outcome == "deny"
    assert call(policy, "files.read", path="/shared/a.txt", mode="read").allowed
    assert call(policy, "files.read", path="/etc/passwd", mode="read").outcome == "deny"
    assert call(policy, "files.read", path="/shared/a.txt", mode="write").outcome == "deny"
    assert call(policy, "chat.post", channel="#support").allowed
    assert call(policy, "chat.post", channel="#general").outcome == "deny"


PROVENANCE = """\
agent: mailer
tools:
  - {match: "mail.send", allow: true, tags: [egress]}
  - {match: "pay.*", allow: true, tags: [egress, irreversible]}
  - {match: "crm.update", allow: true, tags: [write]}
data_flow:
  - {argument_from: untrusted, arguments: [to, cc, iban], require_approval_for_tag: egress}
  - {argument_from: untrusted, deny_for_tag: irreversible}
  - {after_tag: untrusted, require_approval_for_tag: write}
"""


def test_provenance_rule_fires_only_on_an_untrusted_argument() -> None:
    policy = Policy.parse(PROVENANCE, "mailer.yaml")
    tainted = RunState(frozenset({"untrusted"}))
    bad = Finding("to", "attacker@evil.example", "email", "mail.read_inbox")
    clean = DecisionRequest("mailer", "mail.send", frozenset({"egress"}),
                            {"to": "ada@example.com"}, tainted)  # fmt: skip
    # the run read an email, but the recipient did not come from it: not held
    assert decide(policy, clean).outcome == "allow"
    held = decide(
        policy,
        DecisionRequest(
            "mailer",
            "mail.send",
            frozenset({"egress"}),
            {"to": bad.value},
            tainted,
            untrusted=(bad,),
        ),
    )
    assert held.outcome == "approval_required" and held.finding == bad
    assert held.rule == "data_flow[0] cc, iban, to from untrusted -> approval for egress"
    assert 'argument `to` = "attacker@evil.example"' in held.reason
    assert "from mail.read_inbox" in held.reason
    # a body argument is not in the rule's list: a summary of the email may be sent
    body = Finding("body", "https://evil.example", "url", "mail.read_inbox")
    assert decide(
        policy,
        DecisionRequest(
            "mailer", "mail.send", frozenset({"egress"}), {"body": "x"}, tainted, untrusted=(body,)
        ),
    ).allowed
    # an untrusted value reaching an irreversible tool is refused (any argument)
    pay = decide(policy, DecisionRequest("mailer", "pay.transfer", frozenset(),
                                         {"memo": "x"}, untrusted=(body,)))  # fmt: skip
    assert pay.outcome == "deny" and pay.rule.startswith("data_flow[1]")
    # writes that are neither egress nor irreversible can still be held run-wide after taint
    assert decide(policy, DecisionRequest("mailer", "crm.update", run_state=tainted)).outcome == (
        "approval_required"
    )


@pytest.mark.parametrize(
    ("source", "line", "field", "needle"),
    [
        ("agent: a\ndata_flow:\n  - {after_tag: untrusted, require_approval_for_tag: egres}\n",
         3, "data_flow[0].require_approval_for_tag", "did you mean `egress`"),
        ("agent: a\ntools:\n  - {match: x}\n  - {match: y, tags: [pii]}\n", 4,
         "tools[1].tags[0]", "unknown tag `pii`"),
        ("agent: a\ntools:\n  - match: x\n    when: {to: {in_list: contacts}}\n", 4,
         "tools[0].when.to.in_list", "no list named `contacts`"),
        ("agent: a\ntools:\n  - match: x\n    when: {n: {min: 5, max: 1}}\n", 4,
         "tools[0].when.n", "can never fire"),
        ("agent: a\ntools:\n  - match: x\n    when: {n: {regex: '(['}}\n", 4,
         "tools[0].when.n.regex", "does not compile"),
        ("agent: a\ntools:\n  - match: x\n    when: {n: {equal: 3}}\n", 4,
         "tools[0].when.n.equal", "did you mean `equals`"),
        ("agent: a\ndata_flow:\n  - {require_approval_for_tag: egress}\n", 3, "data_flow[0]",
         "exactly one trigger"),
        ("agent: a\ndata_flow:\n  - {argument_from: untrusted, arguments: [],\n"
         "     deny_for_tag: egress}\n", 3, "data_flow[0].arguments", "never fires"),
        ("agent: a\ntools:\n  - {match: x, allow: false, approval: required}\n", 3,
         "tools[0].approval", "never fires"),
    ],
)  # fmt: skip
def test_validation_errors_name_line_and_field(
    source: str, line: int, field: str, needle: str
) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.parse(source, "p.yaml")
    problem = info.value.problems[0]
    assert (problem.line, problem.field) == (line, field), info.value.message
    assert needle in problem.format("p.yaml")


def test_declared_custom_tags_are_accepted() -> None:
    src = "agent: a\ntags: [pii]\ntools:\n  - {match: x, tags: [pii]}\ndata_flow:\n"
    src += "  - {after_tag: pii, require_approval_for_tag: egress}\n"
    assert Policy.parse(src).data_flow[0].after_tag == "pii"


@given(
    amount=st.decimals(min_value=-10_000, max_value=10_000, places=2, allow_nan=False),
    bound=st.integers(min_value=-5000, max_value=5000),
    as_text=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_numeric_bound_agrees_with_arithmetic(amount: Any, bound: int, as_text: bool) -> None:
    src = f"agent: a\ntools:\n  - {{match: t, when: {{n: {{max: {bound}}}}}}}\non_uncertain: deny\n"
    value: Any = f"{amount:,}" if as_text else amount
    d = decide(Policy.parse(src), DecisionRequest("a", "t", arguments={"n": value}))
    assert d.allowed == (amount <= bound)


@given(
    local=st.from_regex(r"[a-z][a-z0-9.]{0,8}", fullmatch=True),
    host=st.sampled_from(["example.com", "mail.example.com", "example.com.evil.net",
                          "notexample.com", "EXAMPLE.COM"]),
)  # fmt: skip
@settings(max_examples=150, deadline=None)
def test_domain_condition_is_suffix_on_labels(local: str, host: str) -> None:
    src = (
        "agent: a\ntools:\n  - {match: t, when: {to: {domain: example.com}}}\non_uncertain: deny\n"
    )
    d = decide(Policy.parse(src), DecisionRequest("a", "t", arguments={"to": f"{local}@{host}"}))
    h = host.lower()
    assert d.allowed == (h == "example.com" or h.endswith(".example.com"))


def test_a_hold_from_a_tool_rule_still_names_the_untrusted_value() -> None:
    src = (
        "agent: a\nlists: {contacts: [ada@example.com]}\ntools:\n"
        "  - {match: mail.send, when: {to: {in_list: contacts}}, allow: true}\n"
        "  - {match: mail.send, approval: required, tags: [egress]}\n"
        "data_flow:\n  - {argument_from: untrusted, arguments: [to], require_approval_for_tag: "
        "egress}\n  - {argument_from: untrusted, deny_for_tag: irreversible}\n"
    )
    bad = Finding("to", "eve@evil.example", "email", "web.fetch")
    d = decide(Policy.parse(src), DecisionRequest("a", "mail.send", arguments={"to": bad.value},
                                                  untrusted=(bad,)))  # fmt: skip
    assert d.outcome == "approval_required" and d.rule.startswith("tools[1]")
    assert d.finding == bad and "appeared only in untrusted content" in d.reason
    # a later deny rule still applies to the hold
    d = decide(Policy.parse(src), DecisionRequest("a", "mail.send", frozenset({"irreversible"}),
                                                  {"to": bad.value}, untrusted=(bad,)))  # fmt: skip
    assert d.outcome == "deny" and d.rule.startswith("data_flow[1]")
