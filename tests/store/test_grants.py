"""Scoped approvals and value provenance in the store, on SQLite and PostgreSQL: grants made
by approving with a scope, what they cover, revocation, and the provenance upsert's OR."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from tether.core.errors import BadRequestError
from tether.core.provenance import Atom
from tether.store import approvals, grants, provenance

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
FINDING = {"argument": "to", "value": "eve@evil.example", "kind": "email", "source": "web.fetch"}


def _hold(db: Engine, run_id: str = "run_g1", finding: dict[str, str] | None = FINDING) -> str:
    args = {"to": "eve@evil.example"}
    held = approvals.create(db, tool="mail.send", arguments=args, run_id=run_id, agent="a",
                            rule="data_flow[0]", reason="r", timeout_s=60, now=NOW,
                            finding=finding, args_hash=grants.args_hash(args))  # fmt: skip
    return held.id


def test_scopes_cover_what_they_say(db: Engine) -> None:
    h = grants.args_hash({"to": "eve@evil.example"})
    run_scoped = _hold(db)
    approvals.decide(db, run_scoped, approve=True, actor="ops", reason=None, now=NOW, scope="run")
    cover = grants.covering(db, agent="a", tool="mail.send", run_id="run_g1", arguments_hash=h,
                            finding=None)  # fmt: skip
    assert cover is not None and cover.scope == "run"
    assert grants.covering(db, agent="a", tool="mail.send", run_id="run_other", arguments_hash=h,
                           finding=None) is None  # fmt: skip
    party = _hold(db, "run_g2")
    approvals.decide(db, party, approve=True, actor="ops", reason=None, now=NOW,
                     scope="counterparty")  # fmt: skip
    found = grants.covering(db, agent="a", tool="mail.send", run_id="run_g9",
                            arguments_hash="x", finding=FINDING)  # fmt: skip
    assert found is not None and found.value == "eve@evil.example"
    assert grants.covering(db, agent="b", tool="mail.send", run_id="run_g9", arguments_hash="x",
                           finding=FINDING) is None  # fmt: skip
    grants.revoke(db, found.id, actor="ops", now=NOW)
    assert grants.covering(db, agent="a", tool="mail.send", run_id="run_g9", arguments_hash="x",
                           finding=FINDING) is None  # fmt: skip
    same = approvals.find_same(db, run_id="run_g1", tool="mail.send", args_hash=h)
    assert same is not None and same.id == run_scoped and same.scope == "run"


def test_counterparty_needs_a_value_and_nothing_changes_on_refusal(db: Engine) -> None:
    held = _hold(db, "run_g3", finding=None)
    with pytest.raises(BadRequestError, match="no counterparty"):
        approvals.decide(db, held, approve=True, actor="ops", reason=None, now=NOW,
                         scope="counterparty")  # fmt: skip
    assert approvals.get(db, held).pending and grants.list_grants(db) == []


def test_provenance_flags_are_ored_and_first_sources_kept(db: Engine) -> None:
    atom = Atom("email", "eve@evil.example")
    with db.begin() as conn:
        provenance.record(conn, "run_p", [atom], trusted=False, source="web.fetch", now=NOW)
        provenance.record(conn, "run_p", [atom], trusted=False, source="mail.read", now=NOW)
    seen = provenance.known(db, "run_p", [atom.digest])[atom.digest]
    assert (seen.trusted, seen.untrusted, seen.source) == (False, True, "web.fetch")
    with db.begin() as conn:
        provenance.record(conn, "run_p", [atom], trusted=True, source="crm.lookup", now=NOW)
    seen = provenance.known(db, "run_p", [atom.digest])[atom.digest]
    assert (seen.trusted, seen.untrusted) == (True, True)
    [row] = provenance.list_values(db, "run_p")
    assert row["origin"] == "both" and row["trusted_source"] == "crm.lookup"
