"""The policy suggester: a valid policy from tools and usage that allows what the agent used,
holds untrusted counterparties of outward tools, and denies what it never used."""

from __future__ import annotations

from tether.core.policy import DecisionRequest, Policy, decide
from tether.core.provenance import Finding
from tether.core.suggest import ToolInfo, Usage, counterparty_arguments, suggest

SEND = {"properties": {"to": {"type": "string"}, "subject": {}, "body": {}}}
PAY = {"properties": {"iban": {}, "amount": {"type": "number"}, "memo": {}}}
TOOLS = [
    ToolInfo("mail.send_email", frozenset({"egress", "write"}), SEND),
    ToolInfo("mail.read_inbox", frozenset({"read", "untrusted"})),
    ToolInfo("pay.transfer", frozenset({"egress", "irreversible"}), PAY),
    ToolInfo("files.delete_file", frozenset({"irreversible"}), {"properties": {"file_id": {}}}),
    ToolInfo("admin.reset", frozenset({"write"})),
]
USAGE = Usage(
    runs=4,
    tools={"mail.send_email": 3, "mail.read_inbox": 4, "pay.transfer": 1},
    task_inputs=["Reply to ada@example.com", "Pay invoice 7 to DE89 3704 0044 0532 0130 00"],
)


def test_counterparty_arguments_by_name_and_format() -> None:
    schema = {"properties": {"to": {}, "cc_list": {}, "subject": {}, "site": {"format": "uri"},
                             "amount": {}, "share_with": {}}}  # fmt: skip
    assert counterparty_arguments(schema) == ["cc_list", "share_with", "site", "to"]


def test_suggested_policy_is_valid_and_does_what_it_says() -> None:
    policy = Policy.parse(suggest("support", TOOLS, USAGE), "suggested.yaml")
    egress = frozenset({"egress"})

    def out(tool: str, tags: frozenset[str] = frozenset(), **kw: object) -> str:
        return decide(policy, DecisionRequest("support", tool, tags, **kw)).outcome  # type: ignore[arg-type]

    assert out("mail.read_inbox") == "allow"
    assert out("mail.send_email", egress, arguments={"to": "ada@example.com"}) == "allow"
    evil = Finding("to", "eve@evil.example", "email", "mail.read_inbox")
    held = out("mail.send_email", egress, arguments={"to": evil.value}, untrusted=(evil,))
    assert held == "approval_required"
    assert out("files.delete_file", frozenset({"irreversible"})) == "approval_required"
    assert out("admin.reset") == "deny" and out("never.seen") == "deny"
    assert policy.lists["contacts"] == frozenset({"ada@example.com"})
    assert policy.lists["payees"] == frozenset({"DE89370400440532013000"})
    assert policy.data_flow[0].arguments == frozenset({"file_id", "iban", "to"})
