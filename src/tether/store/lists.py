"""Named lists in the registry (contacts, payees, allowed domains): create, replace, edit and
delete them, each change audited; and `resolve`, which hands the policy engine in-memory sets
that are re-read only when a list's version moved (checked at most every REFRESH_S seconds).

A policy names one with `lists: {payees: {registry: finance-payees}}`. A policy that names a
list that does not exist is refused when applied, and a list that a policy names cannot be
deleted, so a condition can never silently test against nothing.
"""

from __future__ import annotations

import math
import re
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from tether.core.errors import BadRequestError, ConflictError, NotFoundError
from tether.core.policy_args import normalize_list
from tether.core.provenance import atoms_of
from tether.store import audit
from tether.store.engine import reading
from tether.store.tables import named_lists

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
MAX_ENTRIES = 100_000
MAX_ENTRY_CHARS = 512
REFRESH_S = 1.0  # how stale another replica's change may be in this process, at most


@dataclass(frozen=True)
class NamedList:
    name: str
    description: str | None
    entries: tuple[str, ...]
    version: int
    updated_by: str | None
    created_at: datetime
    updated_at: datetime

    def to_dict(self, *, entries: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "size": len(self.entries),
            "version": self.version,
            "updated_by": self.updated_by,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }
        if entries:
            out["entries"] = list(self.entries)
        return out


@dataclass(frozen=True)
class Resolved:
    """A list as decisions use it: normalised entries for conditions, and the digests of its
    values' provenance atoms (a registry list is a trusted source, like the task input)."""

    version: int
    entries: frozenset[str]
    digests: frozenset[str]


def _row(row: Any) -> NamedList:
    r = row._mapping
    return NamedList(r["name"], r["description"], tuple(r["entries"] or ()), int(r["version"]),
                     r["updated_by"], r["created_at"], r["updated_at"])  # fmt: skip


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise BadRequestError(
            f"list name {name!r} is not allowed: use letters, digits and . _ : - (at most 200)"
        )
    return name


def clean_entries(entries: Iterable[Any]) -> tuple[str, ...]:
    """Entries as text, trimmed, without blanks and without duplicates (by normalised form)."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in entries:
        if not isinstance(raw, str | int | float) or isinstance(raw, bool):
            raise BadRequestError(f"list entry {raw!r} is not text or a number")
        text = str(raw).strip()
        if not text:
            continue
        if len(text) > MAX_ENTRY_CHARS:
            raise BadRequestError(f"list entry {text[:40]!r}... is over {MAX_ENTRY_CHARS} chars")
        key = next(iter(normalize_list("", [text])))
        if key not in seen:
            seen.add(key)
            out.append(text)
    if len(out) > MAX_ENTRIES:
        raise BadRequestError(f"a list holds at most {MAX_ENTRIES} entries (got {len(out)})")
    return tuple(out)


def get_list(engine: Engine, name: str) -> NamedList:
    with reading(engine) as conn:
        row = conn.execute(select(named_lists).where(named_lists.c.name == name)).first()
    if row is None:
        raise NotFoundError(f"no list named {name!r}; `tether lists ls` shows them")
    return _row(row)


def all_lists(engine: Engine) -> list[NamedList]:
    with reading(engine) as conn:
        return [_row(r) for r in conn.execute(select(named_lists).order_by(named_lists.c.name))]


def put_list(
    engine: Engine,
    name: str,
    entries: Iterable[Any],
    *,
    actor: str,
    now: datetime,
    description: str | None = None,
) -> NamedList:
    """Creates the list or replaces its entries (audited as list.created / list.replaced)."""
    check_name(name)
    clean = clean_entries(entries)
    with engine.begin() as conn:
        old = _locked(conn, name)
        if old is None:
            conn.execute(insert(named_lists).values(
                name=name, description=description, entries=list(clean), version=1,
                updated_by=actor, created_at=now, updated_at=now))  # fmt: skip
            action, data = "list.created", {"size": len(clean), "entries": list(clean)[:200]}
        else:
            added, removed = _delta(old.entries, clean)
            conn.execute(update(named_lists).where(named_lists.c.name == name).values(
                entries=list(clean), version=old.version + 1, updated_by=actor, updated_at=now,
                description=description if description is not None else old.description,
            ))  # fmt: skip
            action = "list.replaced"
            data = {"size": len(clean), "added": added[:200], "removed": removed[:200]}
        audit.append_in(conn, actor, action, f"list:{name}", data, now)
        found = _locked(conn, name)
    _invalidate(engine)
    assert found is not None
    return found


def edit_list(
    engine: Engine,
    name: str,
    *,
    add: Iterable[Any] = (),
    remove: Iterable[Any] = (),
    actor: str,
    now: datetime,
) -> NamedList:
    """Adds and removes entries of an existing list (audited as list.changed)."""
    with engine.begin() as conn:
        old = _locked(conn, name)
        if old is None:
            raise NotFoundError(f"no list named {name!r}; create it with `tether lists set`")
        drop = {next(iter(normalize_list("", [e]))) for e in clean_entries(remove)}
        kept = [e for e in old.entries if next(iter(normalize_list("", [e]))) not in drop]
        new = clean_entries([*kept, *clean_entries(add)])
        added, removed = _delta(old.entries, new)
        if added or removed:
            conn.execute(update(named_lists).where(named_lists.c.name == name).values(
                entries=list(new), version=old.version + 1, updated_by=actor,
                updated_at=now))  # fmt: skip
            audit.append_in(conn, actor, "list.changed", f"list:{name}",
                            {"size": len(new), "added": added[:200], "removed": removed[:200]},
                            now)  # fmt: skip
        found = _locked(conn, name)
    _invalidate(engine)
    assert found is not None
    return found


def delete_list(
    engine: Engine, name: str, *, actor: str, now: datetime, used_by: Iterable[str] = ()
) -> None:
    """Deletes a list that no policy names (`used_by`: the agents whose policy does)."""
    users = sorted(set(used_by))
    if users:
        raise ConflictError(
            f"list {name!r} is named by the policy of {', '.join(users)}; remove it from those "
            "policies (`lists:`) first, so no condition is left testing against nothing",
            code="list_in_use",
        )
    with engine.begin() as conn:
        old = _locked(conn, name)
        if old is None:
            raise NotFoundError(f"no list named {name!r}; `tether lists ls` shows them")
        conn.execute(delete(named_lists).where(named_lists.c.name == name))
        audit.append_in(conn, actor, "list.deleted", f"list:{name}",
                        {"size": len(old.entries), "version": old.version}, now)  # fmt: skip
    _invalidate(engine)


def existing(engine: Engine, names: Iterable[str]) -> set[str]:
    """Which of `names` are lists in the registry."""
    wanted = sorted(set(names))
    if not wanted:
        return set()
    with reading(engine) as conn:
        q = select(named_lists.c.name).where(named_lists.c.name.in_(wanted))
        return {r[0] for r in conn.execute(q)}


def _locked(conn: Connection, name: str) -> NamedList | None:
    q = select(named_lists).where(named_lists.c.name == name)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).first()
    return _row(row) if row is not None else None


def _delta(old: Iterable[str], new: Iterable[str]) -> tuple[list[str], list[str]]:
    o, n = set(old), set(new)
    return sorted(n - o), sorted(o - n)


# ---------------------------------------------------------------- in-memory sets for decide()


class _Cache:
    """Resolved lists by name, and when their versions were last compared with the store."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[str, Resolved] = {}
        self.checked_at = -math.inf  # monotonic; -inf forces a check


_caches: weakref.WeakKeyDictionary[Engine, _Cache] = weakref.WeakKeyDictionary()


def _cache(engine: Engine) -> _Cache:
    cache = _caches.get(engine)
    if cache is None:
        cache = _caches.setdefault(engine, _Cache())
    return cache


def _invalidate(engine: Engine) -> None:
    _cache(engine).checked_at = -math.inf


def _resolve(entries: Iterable[str], version: int) -> Resolved:
    values = list(entries)
    digests = frozenset(a.digest for a in atoms_of(values))
    return Resolved(version, normalize_list("", values), digests)


def resolve(
    engine: Engine, names: Iterable[str], *, clock: Any = time.monotonic
) -> Mapping[str, Resolved]:
    """The registry lists `names` as in-memory sets. The store is asked for versions at most
    every REFRESH_S seconds (a change made in this process shows at once), and a list's
    entries are read and normalised again only when its version moved. A missing list
    resolves to nothing (its conditions then fail, as for an empty list)."""
    wanted = set(names)
    if not wanted:
        return {}
    cache = _cache(engine)
    now = clock()
    stale = now - cache.checked_at >= REFRESH_S
    if stale:
        with cache.lock:
            with reading(engine) as conn:
                versions = {
                    r.name: int(r.version)
                    for r in conn.execute(select(named_lists.c.name, named_lists.c.version))
                }
            changed = [n for n, v in versions.items()
                       if n not in cache.items or cache.items[n].version != v]  # fmt: skip
            fresh = dict(cache.items)
            for gone in set(fresh) - set(versions):
                del fresh[gone]
            if changed:
                with reading(engine) as conn:
                    q = select(named_lists.c.name, named_lists.c.entries, named_lists.c.version)
                    for row in conn.execute(q.where(named_lists.c.name.in_(changed))):
                        fresh[row.name] = _resolve(row.entries or (), int(row.version))
            cache.items = fresh
            cache.checked_at = now
    return {n: cache.items[n] for n in wanted if n in cache.items}
