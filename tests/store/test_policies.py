"""Versioned policies in the store: apply, history, diff, cache, audit, folder loading."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from tether.core.errors import NotFoundError
from tether.core.policy import PolicyError
from tether.store import audit, policies
from tether.store.tables import policies as policies_table

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
V1 = "agent: triage\ntools:\n  - {match: 'erp.*'}\n"
V2 = V1 + "on_uncertain: deny\n"


def test_apply_versions_only_on_change(db: Engine) -> None:
    first = policies.apply_policy(db, V1, "admin", NOW)
    assert (first.agent, first.version, first.changed) == ("triage", 1, True)
    same = policies.apply_policy(db, V1, "admin", NOW)
    assert (same.version, same.changed) == (1, False)
    second = policies.apply_policy(db, V2, "bob", NOW)
    assert (second.version, second.changed) == (2, True)
    assert [v.version for v in policies.history(db, "triage")] == [2, 1]
    assert policies.history(db, "triage")[0].applied_by == "bob"
    assert policies.get(db, "triage").on_uncertain == "deny"  # type: ignore[union-attr]
    assert policies.get(db, "triage", 1).on_uncertain == "ask"  # type: ignore[union-attr]
    assert policies.get(db, "nobody") is None
    assert policies.get(db, "triage", 9) is None
    assert [v.agent for v in policies.list_latest(db)] == ["triage"]


def test_every_new_version_is_audited(db: Engine) -> None:
    policies.apply_policy(db, V1, "admin", NOW)
    policies.apply_policy(db, V1, "admin", NOW)
    policies.apply_policy(db, V2, "admin", NOW)
    entries, _ = audit.list_entries(db, action="policy.applied", newest_first=False)
    assert [(e.subject, e.data["version"]) for e in entries] == [("triage", 1), ("triage", 2)]
    assert audit.verify(db).ok


def test_invalid_policy_changes_nothing(db: Engine) -> None:
    with pytest.raises(PolicyError) as info:
        policies.apply_policy(db, "agent: triage\nbogus: 1\n", "admin", NOW, file="t.yaml")
    assert info.value.problems[0].line == 2
    assert policies.history(db, "triage") == []
    assert audit.count(db) == 0


def test_diff(db: Engine) -> None:
    policies.apply_policy(db, V1, "admin", NOW)
    policies.apply_policy(db, V2, "admin", NOW)
    text = policies.diff(db, "triage", 1, 2)
    assert "--- triage v1" in text and "+++ triage v2" in text
    assert "+on_uncertain: deny" in text
    assert policies.diff(db, "triage", 2, 2) == ""
    with pytest.raises(NotFoundError):
        policies.diff(db, "triage", 1, 7)


def test_cache_follows_new_versions_from_another_engine(db: Engine, db_url: str) -> None:
    from tether.store.engine import make_engine

    policies.apply_policy(db, V1, "admin", NOW)
    assert policies.get(db, "triage").on_uncertain == "ask"  # type: ignore[union-attr]
    other = make_engine(db_url)
    try:
        policies.apply_policy(other, V2, "admin", NOW)
    finally:
        other.dispose()
    assert policies.get(db, "triage").on_uncertain == "deny"  # type: ignore[union-attr]
    # a cached version is the same compiled object
    assert policies.get(db, "triage", 2) is policies.get(db, "triage", 2)


def test_concurrent_applies_get_distinct_versions(db: Engine) -> None:
    errors: list[BaseException] = []

    def apply(i: int) -> None:
        try:
            policies.apply_policy(db, V1 + f"owner: o{i}\n", f"a{i}", NOW)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=apply, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.connect() as conn:
        versions = sorted(conn.execute(select(policies_table.c.version)).scalars())
    assert versions == [1, 2, 3, 4, 5, 6]
    assert audit.verify(db).ok


def test_load_folder(db: Engine, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("agent: a\n")
    (tmp_path / "b.yml").write_text("agent: b\n")
    (tmp_path / "notes.txt").write_text("not a policy")
    applied = policies.load_folder(db, tmp_path, NOW)
    assert [(x.agent, x.version) for x in applied] == [("a", 1), ("b", 1)]
    assert policies.history(db, "a")[0].applied_by == "file:a.yaml"
    (tmp_path / "c.yaml").write_text("agent: c\ntools: {}\n")
    with pytest.raises(PolicyError) as info:
        policies.load_folder(db, tmp_path, NOW)
    assert info.value.message.startswith(f"{tmp_path / 'c.yaml'}:2: tools:")
