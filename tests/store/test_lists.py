"""Named lists in the registry: create, replace, edit, delete (each audited), policies that
name them (refused when the list is missing; the list cannot be deleted while named), and the
in-memory sets decisions use, refreshed when a list's version moves."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from tether.core.errors import BadRequestError, ConflictError, NotFoundError
from tether.core.policy import PolicyError
from tether.gateway.mcp.guard import Guard
from tether.store import audit, lists, policies
from tether.store import tools as registry
from tether.store.provenance import record

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
IBAN = "DE89 3704 0044 0532 0130 00"
OTHER_IBAN = "GB82 WEST 1234 5698 7654 32"

POLICY = """\
agent: payer
lists:
  payees: {registry: finance-payees}
  contacts: [ops@corp.example]
tools:
  - match: pay.transfer
    when: {iban: {in_list: payees}, amount: {max: 500}}
    allow: true
  - {match: pay.transfer, when: {iban: {not_in_list: payees}}, allow: false}
  - {match: pay.transfer, approval: required}
  - {match: "mail.read", allow: true, tags: [untrusted]}
  - {match: "mail.send", allow: true, tags: [egress]}
data_flow:
  - {argument_from: untrusted, require_approval_for_tag: egress}
on_uncertain: deny
"""


def test_put_edit_delete_are_audited(db: Engine) -> None:
    made = lists.put_list(db, "finance-payees", [IBAN, " ", IBAN.replace(" ", "")],
                          actor="alice", now=NOW, description="who we pay")  # fmt: skip
    assert made.entries == (IBAN,) and made.version == 1  # one IBAN, however it is spaced
    edited = lists.edit_list(db, "finance-payees", add=[OTHER_IBAN], remove=[], actor="bob",
                             now=NOW)  # fmt: skip
    assert edited.version == 2 and set(edited.entries) == {IBAN, OTHER_IBAN}
    gone = lists.edit_list(db, "finance-payees", remove=[IBAN.replace(" ", "").lower()],
                           actor="bob", now=NOW)  # fmt: skip
    assert gone.entries == (OTHER_IBAN,) and gone.version == 3
    replaced = lists.put_list(db, "finance-payees", [IBAN], actor="carol", now=NOW)
    assert replaced.version == 4 and replaced.description == "who we pay"
    lists.delete_list(db, "finance-payees", actor="dave", now=NOW)
    with pytest.raises(NotFoundError):
        lists.get_list(db, "finance-payees")
    entries, _ = audit.list_entries(db, subject="list:finance-payees", limit=10)
    actions = [(e.action, e.actor) for e in reversed(entries)]
    assert actions == [("list.created", "alice"), ("list.changed", "bob"), ("list.changed", "bob"),
                       ("list.replaced", "carol"), ("list.deleted", "dave")]  # fmt: skip
    assert entries[2].data["removed"] == [IBAN]  # newest first: the second change removed it
    assert audit.verify(db).ok


def test_bad_names_and_entries_are_refused(db: Engine) -> None:
    with pytest.raises(BadRequestError):
        lists.put_list(db, "no spaces", ["a"], actor="a", now=NOW)
    with pytest.raises(BadRequestError):
        lists.put_list(db, "ok", [True], actor="a", now=NOW)
    with pytest.raises(NotFoundError):
        lists.edit_list(db, "missing", add=["x"], actor="a", now=NOW)


def test_a_policy_naming_a_missing_list_is_refused_with_its_line(db: Engine) -> None:
    with pytest.raises(PolicyError) as err:
        policies.apply_policy(db, POLICY, "test", NOW, file="payer.yaml")
    [problem] = err.value.problems
    assert problem.line == 3 and "finance-payees" in problem.problem
    assert "tether lists set finance-payees" in problem.fix


def test_a_list_a_policy_names_cannot_be_deleted(db: Engine) -> None:
    lists.put_list(db, "finance-payees", [IBAN], actor="a", now=NOW)
    policies.apply_policy(db, POLICY, "test", NOW)
    users = policies.agents_using_list(db, "finance-payees")
    assert users == ["payer"]
    with pytest.raises(ConflictError) as err:
        lists.delete_list(db, "finance-payees", actor="a", now=NOW, used_by=users)
    assert err.value.code == "list_in_use"
    assert lists.get_list(db, "finance-payees").entries == (IBAN,)


def test_resolve_reads_again_only_when_a_version_moved(db: Engine) -> None:
    lists.put_list(db, "domains", ["corp.example"], actor="a", now=NOW)
    t = [100.0]
    first = lists.resolve(db, ["domains", "absent"], clock=lambda: t[0])
    assert set(first) == {"domains"} and first["domains"].entries == frozenset({"corp.example"})
    again = lists.resolve(db, ["domains"], clock=lambda: t[0])
    assert again["domains"] is first["domains"]  # the same in-memory set, no re-read
    lists.edit_list(db, "domains", add=["partner.example"], actor="a", now=NOW)
    fresh = lists.resolve(db, ["domains"], clock=lambda: t[0])  # a local write shows at once
    assert fresh["domains"].entries == frozenset({"corp.example", "partner.example"})


def guard_for(db: Engine) -> Guard:
    registry.sync_tools(db, [
        registry.ToolSpec(name="pay.transfer", server="pay", kind="mcp"),
        registry.ToolSpec(name="mail.read", server="mail", kind="mcp"),
        registry.ToolSpec(name="mail.send", server="mail", kind="mcp"),
    ], now=NOW)  # fmt: skip
    return Guard(db, redis=None, approval_timeout_s=60)


def test_decisions_use_registry_lists_and_name_them(db: Engine) -> None:
    lists.put_list(db, "finance-payees", [IBAN], actor="a", now=NOW)
    policies.apply_policy(db, POLICY, "test", NOW)
    guard = guard_for(db)

    def check(args: dict[str, object]) -> str:
        v = guard.check(agent="payer", run_id=None, name="pay.transfer", arguments=args,
                        now=NOW, actor="t")  # fmt: skip
        return f"{v.outcome}: {v.decision.reason}"

    ok = check({"iban": IBAN.replace(" ", ""), "amount": 120})
    assert ok.startswith("allow") and "registry list finance-payees (payees)" in ok
    refused = check({"iban": OTHER_IBAN, "amount": 120})
    assert refused.startswith("deny") and "not in registry list finance-payees" in refused
    lists.edit_list(db, "finance-payees", add=[OTHER_IBAN], actor="a", now=NOW)
    assert check({"iban": OTHER_IBAN, "amount": 120}).startswith("allow")  # no policy change


def test_registry_list_values_are_trusted_for_provenance(db: Engine) -> None:
    lists.put_list(db, "finance-payees", ["billing@vendor.example"], actor="a", now=NOW)
    policies.apply_policy(db, POLICY, "test", NOW)
    guard = guard_for(db)
    run = "run_lists_prov"
    guard.record_values(run, source="mail.read", output="Pay billing@vendor.example or "
                        "evil@attacker.example", untrusted=True, arguments=None, now=NOW,
                        agent="payer")  # fmt: skip

    def send(to: str) -> str:
        v = guard.check(agent="payer", run_id=run, name="mail.send", arguments={"to": to},
                        now=NOW, actor="t")  # fmt: skip
        return v.outcome

    assert send("evil@attacker.example") == "approval_required"
    assert send("billing@vendor.example") == "allow"  # in a registry list: a trusted source
    with db.begin() as conn:  # the inline list is trusted too
        record(conn, run, [], trusted=True, source="x", now=NOW)
    guard.record_values(run, source="mail.read", output="cc ops@corp.example", untrusted=True,
                        arguments=None, now=NOW, agent="payer")  # fmt: skip
    assert send("ops@corp.example") == "allow"
