"""Agent memory in the store: write (supersede by key, de-duplicate by content), search (vector,
namespace-isolated and user-partitioned on every query), list, forget; every access audited.

Isolation is not a filter the caller passes: every query takes a `core.memory.Access` and the SQL
names only the namespaces that access allows, then each row is checked again before it leaves.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    Engine,
    Text,
    and_,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from tether.core import memory as rules
from tether.core.errors import BadRequestError, ConflictError, NotFoundError
from tether.core.ids import make_id
from tether.store import audit
from tether.store.engine import reading
from tether.store.memory_index import VectorIndex, exact_top_k
from tether.store.runs import escape_like
from tether.store.tables import TS, audit_log, memories, memory_namespaces

WriteStatus = Literal["created", "superseded", "unchanged"]
MAX_K = 100
MAX_TAGS = 32


@dataclass(frozen=True)
class Memory:
    id: str
    namespace: str
    key: str | None
    text: str
    metadata: dict[str, Any] | None
    tags: tuple[str, ...]
    user: str | None
    source_run_id: str | None
    source_span_id: str | None
    content_hash: str
    written_by: str | None
    created_at: datetime
    superseded_at: datetime | None
    superseded_by: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "namespace": self.namespace,
            "key": self.key,
            "text": self.text,
            "metadata": self.metadata,
            "tags": list(self.tags),
            "user": self.user,
            "source_run_id": self.source_run_id,
            "source_span_id": self.source_span_id,
            "content_hash": self.content_hash,
            "written_by": self.written_by,
            "created_at": self.created_at.isoformat(),
            "superseded_at": self.superseded_at.isoformat() if self.superseded_at else None,
            "superseded_by": self.superseded_by,
        }


@dataclass(frozen=True)
class Hit:
    memory: Memory
    score: float


@dataclass(frozen=True)
class Written:
    memory: Memory
    status: WriteStatus
    superseded: str | None = None


@dataclass(frozen=True)
class Quota:
    max_items: int | None = None
    max_bytes: int | None = None


_COLUMNS = [c for c in memories.c if c.name != "embedding"]


def _memory(row: Any) -> Memory:
    return Memory(
        id=row.id,
        namespace=row.namespace,
        key=row.key,
        text=row.text,
        metadata=row.metadata,
        tags=tuple(row.tags or ()),
        user=row.user,
        source_run_id=row.source_run_id,
        source_span_id=row.source_span_id,
        content_hash=row.content_hash,
        written_by=row.written_by,
        created_at=row.created_at,
        superseded_at=row.superseded_at,
        superseded_by=row.superseded_by,
    )


def _check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(tags))
    if len(out) > MAX_TAGS or not all(isinstance(t, str) and 0 < len(t) <= 100 for t in out):
        raise BadRequestError(f"tags: at most {MAX_TAGS} strings of 1-100 characters")
    return out


def _live(as_of: datetime | None) -> ColumnElement[bool]:
    """Memories valid now, or at `as_of` (written by then and not yet superseded)."""
    if as_of is None:
        return memories.c.superseded_at.is_(None)
    return and_(
        memories.c.created_at <= as_of,
        or_(memories.c.superseded_at.is_(None), memories.c.superseded_at > as_of),
    )


def _scoped(scope: rules.Scope) -> ColumnElement[bool]:
    """The SQL half of isolation: only the scope's namespaces, only the run's user (or none)."""
    cond: ColumnElement[bool] = memories.c.namespace.in_(sorted(scope.namespaces))
    if not scope.all_users:
        user_cond: ColumnElement[bool] = memories.c.user.is_(None)
        if scope.user is not None:
            user_cond = or_(user_cond, memories.c.user == scope.user)
        cond = and_(cond, user_cond)
    return cond


def _ensure_namespace(
    conn: Connection, name: str, dim: int | None, owner: str | None, embedder: str | None,
    now: datetime,
) -> None:  # fmt: skip
    row = conn.execute(select(memory_namespaces).where(memory_namespaces.c.name == name)).first()
    if row is None:
        conn.execute(
            insert(memory_namespaces).values(
                name=name, owner_agent=owner, embedder=embedder, dim=dim, created_at=now
            )
        )
        return
    if dim is not None and row.dim is not None and row.dim != dim:
        raise BadRequestError(
            f"embedding: namespace {name!r} holds {row.dim}-dimensional vectors, this one has "
            f"{dim}. Fix: embed with the namespace's model ({row.embedder or 'as before'})"
        )
    if dim is not None and row.dim is None:
        conn.execute(
            update(memory_namespaces).where(memory_namespaces.c.name == name).values(dim=dim)
        )


def _check_quota(conn: Connection, namespace: str, text: str, quota: Quota | None) -> None:
    if quota is None or (quota.max_items is None and quota.max_bytes is None):
        return
    live = and_(memories.c.namespace == namespace, memories.c.superseded_at.is_(None))
    count, size = conn.execute(
        select(func.count(), func.coalesce(func.sum(func.length(memories.c.text)), 0)).where(live)
    ).one()
    if quota.max_items is not None and count + 1 > quota.max_items:
        raise ConflictError(
            f"memory namespace {namespace!r} holds {count} memories, its quota is "
            f"{quota.max_items}. Fix: forget old memories or raise the quota",
            code="memory_quota_exceeded",
        )
    if quota.max_bytes is not None and int(size) + len(text) > quota.max_bytes:
        raise ConflictError(
            f"memory namespace {namespace!r} would exceed its quota of {quota.max_bytes} bytes",
            code="memory_quota_exceeded",
        )


def write(
    engine: Engine,
    access: rules.Access,
    *,
    namespace: str | None,
    text: str,
    embedding: Sequence[float] | None,
    now: datetime,
    actor: str,
    key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    tags: Iterable[str] = (),
    user: str | None = None,
    run_id: str | None = None,
    span_id: str | None = None,
    embedder: str | None = None,
    quota: Quota | None = None,
    index: VectorIndex | None = None,
) -> Written:
    """Writes one memory. Same content again: unchanged. Same key, new content: the old memory is
    superseded (kept, so `as_of` still finds it). Audited in the same transaction."""
    ns = namespace or access.own
    if ns is None:
        raise BadRequestError("namespace: required for an operator write")
    tag_t = _check_tags(tags)
    access.check_write(ns, tag_t, now)
    rules.check_text(text)
    if key is not None and not (isinstance(key, str) and 0 < len(key) <= 300):
        raise BadRequestError("key: 1-300 characters")
    blob = rules.encode_vector(embedding) if embedding is not None else None
    dim = len(embedding) if embedding is not None else None
    digest = rules.content_hash(ns, text, metadata)
    meta = dict(metadata) if metadata is not None else None
    with engine.begin() as conn:
        _ensure_namespace(conn, ns, dim, access.agent if ns == access.own else None, embedder, now)
        same = memories.c.key == key if key is not None else memories.c.content_hash == digest
        owner = memories.c.user.is_(None) if user is None else memories.c.user == user
        current = conn.execute(
            select(*_COLUMNS).where(
                memories.c.namespace == ns, same, owner, memories.c.superseded_at.is_(None)
            )
        ).first()
        if current is not None and current.content_hash == digest:
            return Written(_memory(current), "unchanged")
        _check_quota(conn, ns, text, quota if current is None else None)
        new_id = make_id("mem", os.urandom(12))
        row = dict(
            id=new_id, namespace=ns, key=key, text=text, metadata=meta, tags=list(tag_t),
            user=user, source_run_id=run_id, source_span_id=span_id, content_hash=digest,
            embedding=blob, written_by=actor, created_at=now,
        )  # fmt: skip
        conn.execute(insert(memories).values(**row))
        superseded = None
        if current is not None:
            superseded = current.id
            conn.execute(
                update(memories)
                .where(memories.c.id == current.id)
                .values(superseded_at=now, superseded_by=new_id)
            )
        audit.append_in(conn, actor, "memory.write", ns, {
            "id": new_id, "key": key, "superseded": superseded, "run_id": run_id, "user": user,
        }, now)  # fmt: skip
    if index is not None:
        if blob is not None:
            index.add([(new_id, ns, blob)])
        if superseded is not None:
            index.remove([superseded])
    stored = Memory(**{k: v for k, v in row.items() if k != "embedding"}  # type: ignore[arg-type]
                    | {"tags": tag_t, "superseded_at": None, "superseded_by": None})  # fmt: skip
    return Written(stored, "superseded" if superseded else "created", superseded)


def search(
    engine: Engine,
    access: rules.Access,
    *,
    vector: Sequence[float],
    now: datetime,
    actor: str,
    namespaces: Sequence[str] | None = None,
    k: int = 10,
    user: str | None = None,
    tags: Iterable[str] = (),
    key_prefix: str | None = None,
    as_of: datetime | None = None,
    run_id: str | None = None,
    index: VectorIndex | None = None,
) -> list[Hit]:
    """The k memories most similar to `vector` that this access may read. Audited."""
    if not 1 <= k <= MAX_K:
        raise BadRequestError(f"k: 1-{MAX_K}")
    scope = access.read_scope(now, namespaces, user=user)
    if not scope.namespaces:
        return []
    query = rules.encode_vector(vector)
    want_tags = set(_check_tags(tags))
    cond = and_(_scoped(scope), _live(as_of), memories.c.embedding.is_not(None))
    if key_prefix:
        cond = and_(cond, memories.c.key.startswith(key_prefix, autoescape=True))
    hits = _indexed(engine, index, scope, query, k, cond, want_tags, as_of, key_prefix)
    if hits is None:
        hits = _exact(engine, scope, query, k, cond, want_tags)
    _audit_read(engine, actor, scope, hits, run_id, now)
    return hits


def _visible(scope: rules.Scope, m: Memory, want_tags: set[str]) -> bool:
    if want_tags and not want_tags & set(m.tags):
        return False
    return scope.allows(m.namespace, m.tags, m.user)


def _exact(
    engine: Engine, scope: rules.Scope, query: bytes, k: int, cond: ColumnElement[bool],
    want_tags: set[str],
) -> list[Hit]:  # fmt: skip
    with reading(engine) as conn:
        rows = conn.execute(select(memories.c.id, memories.c.embedding).where(cond)).all()
        ranked = exact_top_k(query, [(r.id, r.embedding) for r in rows], k * 4 + 8)
        return _hydrate(conn, scope, ranked, k, want_tags)


def _indexed(
    engine: Engine, index: VectorIndex | None, scope: rules.Scope, query: bytes, k: int,
    cond: ColumnElement[bool], want_tags: set[str], as_of: datetime | None, key_prefix: str | None,
) -> list[Hit] | None:  # fmt: skip
    """Index candidates, re-checked in SQL. None: the index cannot answer (exact search then)."""
    if index is None or as_of is not None:
        return None
    narrow = bool(want_tags or key_prefix or not scope.all_users or _tag_filtered(scope))
    fetch = min(MAX_K * 10, k * (8 if narrow else 2) + 16)
    ranked = index.knn(sorted(scope.namespaces), query, fetch)
    if ranked is None:
        return None
    with reading(engine) as conn:
        ids = [i for i, _ in ranked]
        ok = {r.id for r in conn.execute(select(memories.c.id).where(cond, memories.c.id.in_(ids)))}
        hits = _hydrate(conn, scope, [(i, s) for i, s in ranked if i in ok], k, want_tags)
    if len(hits) < k and len(ranked) >= fetch:
        return None  # the filter ate too many candidates: exact search is right, not short
    return hits


def _tag_filtered(scope: rules.Scope) -> bool:
    return any(v is not None for v in scope.namespaces.values())


def _hydrate(
    conn: Connection, scope: rules.Scope, ranked: Sequence[tuple[str, float]], k: int,
    want_tags: set[str],
) -> list[Hit]:  # fmt: skip
    if not ranked:
        return []
    ids = [i for i, _ in ranked]
    rows = {r.id: _memory(r) for r in conn.execute(select(*_COLUMNS).where(memories.c.id.in_(ids)))}
    out: list[Hit] = []
    for mem_id, score in ranked:
        m = rows.get(mem_id)
        if m is not None and _visible(scope, m, want_tags):
            out.append(Hit(m, round(score, 6)))
            if len(out) == k:
                break
    return out


def _audit_read(
    engine: Engine, actor: str, scope: rules.Scope, hits: Sequence[Hit], run_id: str | None,
    now: datetime,
) -> None:  # fmt: skip
    with engine.begin() as conn:
        audit.append_in(conn, actor, "memory.read", ",".join(sorted(scope.namespaces)), {
            "ids": [h.memory.id for h in hits], "run_id": run_id,
        }, now)  # fmt: skip


def list_memories(
    engine: Engine,
    access: rules.Access,
    *,
    namespace: str,
    now: datetime,
    user: str | None = None,
    key_prefix: str | None = None,
    as_of: datetime | None = None,
    limit: int = 50,
) -> list[Memory]:
    """The newest memories of one namespace the access may read (not audited: no vector read)."""
    scope = access.read_scope(now, [namespace], user=user)
    cond = and_(_scoped(scope), _live(as_of))
    if key_prefix:
        cond = and_(cond, memories.c.key.startswith(key_prefix, autoescape=True))
    with reading(engine) as conn:
        rows = conn.execute(
            select(*_COLUMNS).where(cond).order_by(memories.c.created_at.desc()).limit(limit)
        ).all()
    return [m for m in map(_memory, rows) if scope.allows(m.namespace, m.tags, m.user)]


def get(engine: Engine, access: rules.Access, memory_id: str, *, now: datetime) -> Memory:
    with reading(engine) as conn:
        row = conn.execute(select(*_COLUMNS).where(memories.c.id == memory_id)).first()
    if row is None:
        raise NotFoundError(f"no memory {memory_id}")
    m = _memory(row)
    scope = access.read_scope(now, None)
    if not access.operator and not scope.allows(m.namespace, m.tags, m.user):
        raise NotFoundError(f"no memory {memory_id}")  # not a 403: do not confirm it exists
    return m


def forget(
    engine: Engine,
    access: rules.Access,
    *,
    now: datetime,
    actor: str,
    memory_id: str | None = None,
    run_id: str | None = None,
    user: str | None = None,
    namespace: str | None = None,
    index: VectorIndex | None = None,
) -> list[str]:
    """Erases memories by id, by source run or by user (right to erasure), superseded versions
    included; the audit keeps a tombstone (ids and content hashes, never the text)."""
    if sum(x is not None for x in (memory_id, run_id, user)) != 1:
        raise BadRequestError("forget takes exactly one of id, run_id or user")
    if user is not None and not access.operator:
        raise BadRequestError("forgetting by user is an operator action (an admin key)")
    cond: ColumnElement[bool]
    if memory_id is not None:
        cond = memories.c.id == memory_id
    elif run_id is not None:
        cond = memories.c.source_run_id == run_id
    else:
        cond = memories.c.user == user
    if namespace is not None:
        cond = and_(cond, memories.c.namespace == rules.check_namespace(namespace))
    with engine.begin() as conn:
        rows = conn.execute(
            select(
                memories.c.id,
                memories.c.namespace,
                memories.c.key,
                memories.c.content_hash,
                memories.c.tags,
                memories.c.user,
            ).where(cond)
        ).all()
        for r in rows:
            access.check_write(r.namespace, r.tags or (), now)
        if memory_id is not None and not rows:
            raise NotFoundError(f"no memory {memory_id}")
        # versions of the same fact go too: forgetting a fact forgets its history
        ids = {r.id for r in rows}
        keyed = [(r.namespace, r.key, r.user) for r in rows if r.key is not None]
        for ns, key, owner in keyed:
            same_user = memories.c.user.is_(None) if owner is None else memories.c.user == owner
            ids |= set(conn.scalars(
                select(memories.c.id).where(memories.c.namespace == ns, memories.c.key == key,
                                            same_user)
            ))  # fmt: skip
        if ids:
            conn.execute(delete(memories).where(memories.c.id.in_(sorted(ids))))
        audit.append_in(conn, actor, "memory.forgotten", namespace, {
            "ids": sorted(ids), "by": "id" if memory_id else "run" if run_id else "user",
            "run_id": run_id, "user": user, "hashes": sorted({r.content_hash for r in rows}),
        }, now)  # fmt: skip
    if index is not None and ids:
        index.remove(sorted(ids))
    return sorted(ids)


@dataclass(frozen=True)
class NamespaceStats:
    name: str
    owner_agent: str | None
    embedder: str | None
    dim: int | None
    memories: int
    superseded: int
    bytes: int
    last_write_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["last_write_at"] = self.last_write_at.isoformat() if self.last_write_at else None
        return out


def index_needed_at_start(engine: Engine) -> bool:
    """False for a SQLite file with no memory and no vector index file beside it: nothing to
    search or rebuild, so the index (sqlite-vec: apsw, a second SQLite library, and the numpy it
    imports, ~26 MB of RSS) can wait for the first memory call. True otherwise."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return True
    if Path(f"{database}.vec").exists():
        return True
    with reading(engine) as conn:
        return conn.execute(select(memories.c.id).limit(1)).first() is not None


def namespace_stats(engine: Engine, names: Sequence[str] | None = None) -> list[NamespaceStats]:
    live = memories.c.superseded_at.is_(None)
    q = select(
        memory_namespaces,
        select(func.count()).where(memories.c.namespace == memory_namespaces.c.name, live)
        .scalar_subquery().label("n_live"),
        select(func.count()).where(memories.c.namespace == memory_namespaces.c.name, ~live)
        .scalar_subquery().label("n_old"),
        select(func.coalesce(func.sum(func.length(memories.c.text)), 0))
        .where(memories.c.namespace == memory_namespaces.c.name, live)
        .scalar_subquery().label("size"),
        select(type_coerce(func.max(memories.c.created_at), TS))
        .where(memories.c.namespace == memory_namespaces.c.name)
        .scalar_subquery().label("last"),
    ).order_by(memory_namespaces.c.name)  # fmt: skip
    if names is not None:
        q = q.where(memory_namespaces.c.name.in_(list(names)))
    with reading(engine) as conn:
        rows = conn.execute(q).all()
    return [
        NamespaceStats(r.name, r.owner_agent, r.embedder, r.dim, int(r.n_live), int(r.n_old),
                       int(r.size), r.last)
        for r in rows
    ]  # fmt: skip


@dataclass(frozen=True)
class Read:
    at: datetime
    actor: str
    run_id: str | None
    ids: tuple[str, ...]


def reads_of(engine: Engine, namespace: str, *, limit: int = 50) -> list[Read]:
    """Who searched `namespace` and which memories they got back, newest first (from the audit)."""
    ns = rules.check_namespace(namespace)
    esc = escape_like(ns)
    subject = audit_log.c.subject
    cond = or_(
        subject == ns,
        subject.like(f"{esc},%", escape="\\"),
        subject.like(f"%,{esc}", escape="\\"),
        subject.like(f"%,{esc},%", escape="\\"),
    )
    with reading(engine) as conn:
        rows = conn.execute(
            select(audit_log.c.at, audit_log.c.actor, audit_log.c.data)
            .where(audit_log.c.action == "memory.read", cond)
            .order_by(audit_log.c.seq.desc())
            .limit(limit)
        ).all()
    return [
        Read(r.at, r.actor, (r.data or {}).get("run_id"), tuple((r.data or {}).get("ids") or ()))
        for r in rows
    ]


def run_activity(engine: Engine, run_id: str, *, limit: int = 50) -> dict[str, Any]:
    """What a run did with memory: the memories it wrote, and its searches with the ids each
    returned (from the audit), newest first; for the run page."""
    needle = f'"run_id": "{run_id}"'
    esc = escape_like(needle)
    with reading(engine) as conn:
        written = conn.execute(
            select(*_COLUMNS)
            .where(memories.c.source_run_id == run_id)
            .order_by(memories.c.created_at.desc())
            .limit(limit)
        ).all()
        reads = conn.execute(
            select(audit_log.c.at, audit_log.c.actor, audit_log.c.subject, audit_log.c.data)
            .where(
                audit_log.c.action == "memory.read",
                cast(audit_log.c.data, Text).like(f"%{esc}%", escape="\\"),
            )
            .order_by(audit_log.c.seq.desc())
            .limit(limit)
        ).all()
    return {
        "writes": [_memory(r) for r in written],
        "reads": [
            {"at": r.at, "actor": r.actor, "namespaces": (r.subject or "").split(","),
             "ids": list((r.data or {}).get("ids") or [])}
            for r in reads
            if (r.data or {}).get("run_id") == run_id
        ],
    }  # fmt: skip
