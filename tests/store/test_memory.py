"""Memory in the store, on SQLite and PostgreSQL: supersede, as_of, isolation, grants, forget,
quotas, audit. The vector indexes (sqlite-vec, pgvector) have tests of their own."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from tether.core.errors import BadRequestError, ConflictError, NotFoundError, PermissionDeniedError
from tether.core.memory import Access, Grant
from tether.store import audit
from tether.store import memory as mem

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
A = Access("agent-a", "agent-a")
B = Access("agent-b", "agent-b")
OPS = Access(None, None)


def vec(*xs: float) -> list[float]:
    return list(xs) + [0.0] * (4 - len(xs))


def put(engine: Engine, access: Access, text: str, v: list[float], **kw: object) -> mem.Written:
    return mem.write(engine, access, namespace=kw.pop("namespace", None), text=text, embedding=v,
                     now=kw.pop("now", NOW), actor=access.agent or "admin", **kw)  # type: ignore[arg-type]  # fmt: skip


def find(engine: Engine, access: Access, v: list[float], **kw: object) -> list[str]:
    hits = mem.search(engine, access, vector=v, now=kw.pop("now", NOW), actor="t", **kw)  # type: ignore[arg-type]
    return [h.memory.text for h in hits]


def test_write_search_supersede_and_as_of(db: Engine) -> None:
    first = put(db, A, "invoice limit is $500", vec(1, 0), key="limit")
    assert first.status == "created"
    assert put(db, A, "invoice limit is $500", vec(1, 0), key="limit").status == "unchanged"
    later = NOW + timedelta(hours=1)
    second = put(db, A, "invoice limit is $900", vec(1, 0.1), key="limit", now=later)
    assert (second.status, second.superseded) == ("superseded", first.memory.id)
    assert find(db, A, vec(1, 0), now=later) == ["invoice limit is $900"]
    # as_of before the change finds the fact as it was
    assert find(db, A, vec(1, 0), now=later, as_of=NOW + timedelta(minutes=5)) == [
        "invoice limit is $500"
    ]
    assert find(db, A, vec(1, 0), now=later, as_of=NOW - timedelta(minutes=5)) == []


def test_ranking_is_by_cosine(db: Engine) -> None:
    put(db, A, "north", vec(0, 1))
    put(db, A, "east", vec(1, 0))
    put(db, A, "north-east", vec(1, 1))
    assert find(db, A, vec(1, 0.1), k=2) == ["east", "north-east"]


def test_other_agents_memory_is_invisible_and_unwritable(db: Engine) -> None:
    put(db, A, "a's secret plan", vec(1, 0))
    assert find(db, B, vec(1, 0)) == []
    with pytest.raises(PermissionDeniedError) as err:
        find(db, B, vec(1, 0), namespaces=["agent-a"])
    assert err.value.code == "memory_not_granted"
    with pytest.raises(PermissionDeniedError):
        put(db, B, "overwrite", vec(1, 0), namespace="agent-a")
    with pytest.raises(NotFoundError):
        mem.get(db, B, put(db, A, "x", vec(0, 1)).memory.id, now=NOW)


def test_grants_expire_and_filter_by_tag(db: Engine) -> None:
    put(db, OPS, "public fact", vec(1, 0), namespace="kb", tags=["public"])
    put(db, OPS, "internal fact", vec(1, 0.2), namespace="kb", tags=["internal"])
    reader = Access("agent-b", "agent-b", (
        Grant("kb", "read", expires_at=NOW + timedelta(days=1), tags=frozenset({"public"})),
    ))  # fmt: skip
    assert find(db, reader, vec(1, 0)) == ["public fact"]
    expired = NOW + timedelta(days=2)
    assert find(db, reader, vec(1, 0), now=expired) == []
    writer = Access("agent-b", "agent-b", (Grant("kb", "write", tags=frozenset({"notes"})),))
    put(db, writer, "b's note", vec(0, 1), namespace="kb", tags=["notes"])
    with pytest.raises(PermissionDeniedError):
        put(db, writer, "untagged", vec(0, 1), namespace="kb")


def test_user_is_a_partition_not_a_hint(db: Engine) -> None:
    put(db, A, "alice likes tea", vec(1, 0), user="alice")
    put(db, A, "bob likes coffee", vec(1, 0.01), user="bob")
    put(db, A, "the office is in Lyon", vec(1, 0.02))
    assert find(db, A, vec(1, 0), user="alice") == ["alice likes tea", "the office is in Lyon"]
    assert find(db, A, vec(1, 0)) == ["the office is in Lyon"]
    removed = mem.forget(db, OPS, now=NOW, actor="admin", user="alice")
    assert len(removed) == 1
    assert find(db, A, vec(1, 0), user="alice") == ["the office is in Lyon"]


def test_forget_by_run_takes_history_and_leaves_a_tombstone(db: Engine) -> None:
    put(db, A, "the first wording", vec(1, 0), key="k", run_id="run_x")
    put(db, A, "v2", vec(1, 0), key="k", run_id="run_x", now=NOW + timedelta(seconds=1))
    put(db, A, "other", vec(0, 1), run_id="run_y")
    gone = mem.forget(db, A, now=NOW, actor="agent-a", run_id="run_x")
    assert len(gone) == 2
    assert find(db, A, vec(1, 0), k=5) == ["other"]
    assert find(db, A, vec(1, 0), k=5, as_of=NOW + timedelta(seconds=0.5)) == ["other"]
    entries = [e for e in audit.iter_entries(db) if e.action == "memory.forgotten"]
    assert entries and sorted(entries[-1].data["ids"]) == gone
    assert "first wording" not in str(entries[-1].data)
    with pytest.raises(BadRequestError):
        mem.forget(db, A, now=NOW, actor="agent-a", user="alice")
    with pytest.raises(PermissionDeniedError):
        mem.forget(db, B, now=NOW, actor="agent-b", run_id="run_y")


def test_every_read_and_write_is_audited_with_ids(db: Engine) -> None:
    w = put(db, A, "audited", vec(1, 0))
    mem.search(db, A, vector=vec(1, 0), now=NOW, actor="agent-a", run_id="run_q")
    actions = [(e.action, e.data) for e in audit.iter_entries(db) if e.action.startswith("memory.")]
    assert actions[0] == ("memory.write", {"id": w.memory.id, "key": None, "superseded": None,
                                           "run_id": None, "user": None})  # fmt: skip
    assert actions[1] == ("memory.read", {"ids": [w.memory.id], "run_id": "run_q"})
    assert audit.verify(db).ok


def test_quota_and_dimension_are_enforced(db: Engine) -> None:
    quota = mem.Quota(max_items=2)
    put(db, A, "one", vec(1, 0), quota=quota)
    put(db, A, "two", vec(0, 1), quota=quota)
    with pytest.raises(ConflictError) as err:
        put(db, A, "three", vec(1, 1), quota=quota)
    assert err.value.code == "memory_quota_exceeded"
    with pytest.raises(BadRequestError, match="4-dimensional"):
        put(db, A, "wide", [1.0] * 8)
    stats = mem.namespace_stats(db, ["agent-a"])[0]
    assert (stats.memories, stats.dim, stats.owner_agent) == (2, 4, "agent-a")


@pytest.mark.parametrize("bad", [[], [math.nan, 1.0], [0.0, 0.0]])
def test_bad_vectors_are_refused(db: Engine, bad: list[float]) -> None:
    with pytest.raises(BadRequestError):
        put(db, A, "x", bad)


_ns = st.sampled_from(["agent-a", "agent-b", "kb"])
_vectors = st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(
    lambda v: any(abs(x) > 1e-3 for x in v)
)
_row = st.tuples(
    _ns,
    st.sampled_from([None, "alice", "bob"]),
    st.lists(st.sampled_from(["p", "q"]), max_size=2),
    _vectors,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(_row, min_size=1, max_size=12),
    q=_vectors,
    user=st.sampled_from([None, "alice", "bob"]),
    tags=st.lists(st.sampled_from(["p", "q"]), max_size=1),
    key_prefix=st.sampled_from([None, "", "k"]),
    grant_tags=st.sampled_from([frozenset(), frozenset({"p"})]),
)  # fmt: skip
def test_property_b_never_sees_a(
    db: Engine, rows: list, q: list[float], user: str | None, tags: list[str],
    key_prefix: str | None, grant_tags: frozenset[str],
) -> None:  # fmt: skip
    """Whatever was written and whatever the filter, agent B's results hold only rows of its own
    namespace or of a namespace granted to it (with the grant's tags), and only its user's."""
    from sqlalchemy import delete

    from tether.store.tables import memories

    with db.begin() as conn:
        conn.execute(delete(memories))
    for i, (ns, owner, rtags, v) in enumerate(rows):
        mem.write(db, OPS, namespace=ns, text=f"m{i}", embedding=v, now=NOW, actor="admin",
                  user=owner, tags=rtags, key=f"k{i}")  # fmt: skip
    b = Access("agent-b", "agent-b", (Grant("kb", "read", tags=grant_tags),))
    hits = mem.search(db, b, vector=q, now=NOW, actor="agent-b", k=20, user=user, tags=tags,
                      key_prefix=key_prefix)  # fmt: skip
    for h in hits:
        m = h.memory
        assert m.namespace in {"agent-b", "kb"}
        assert m.user in (None, user)
        if m.namespace == "kb" and grant_tags:
            assert grant_tags & set(m.tags)
    expected = {
        f"m{i}" for i, (ns, owner, rtags, _) in enumerate(rows)
        if (ns == "agent-b" or (ns == "kb" and (not grant_tags or grant_tags & set(rtags))))
        and owner in (None, user) and (not tags or set(tags) & set(rtags))
    }  # fmt: skip
    assert {h.memory.text for h in hits} == expected
