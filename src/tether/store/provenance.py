"""Value provenance per run, stored: the normalised values (core/provenance.py atoms) that
entered a run, which kinds of source carried them, and the first source of each kind.
A value once seen from a trusted source stays trusted; declassifying one is audited.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, case, select
from sqlalchemy.dialects import postgresql, sqlite

from tether.core.provenance import Atom, Seen, atoms_of
from tether.store import audit
from tether.store.engine import reading
from tether.store.tables import run_values

MAX_VALUE_CHARS = 300
MAX_ATOMS_PER_WRITE = 2000  # one huge output indexes at most this many values


def record(
    conn: Connection,
    run_id: str,
    atoms: Iterable[Atom],
    *,
    trusted: bool,
    source: str,
    now: datetime,
) -> int:
    """Adds `atoms` to the run as seen from a trusted or an untrusted `source`; returns how many."""
    rows = []
    for atom in sorted(set(atoms))[:MAX_ATOMS_PER_WRITE]:
        rows.append({
            "run_id": run_id, "digest": atom.digest, "kind": atom.kind,
            "value": atom.value[:MAX_VALUE_CHARS], "trusted": trusted, "untrusted": not trusted,
            "trusted_source": source[:300] if trusted else None,
            "untrusted_source": None if trusted else source[:300], "first_seen_at": now,
        })  # fmt: skip
    if not rows:
        return 0
    mod: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = mod.insert(run_values)
    t, x = run_values.c, stmt.excluded
    # OR the flags; keep the first source of each kind (COALESCE keeps what was there)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "digest"],
        set_={
            "trusted": case((t.trusted, True), else_=x.trusted),
            "untrusted": case((t.untrusted, True), else_=x.untrusted),
            "trusted_source": case((t.trusted_source.is_(None), x.trusted_source),
                                   else_=t.trusted_source),
            "untrusted_source": case((t.untrusted_source.is_(None), x.untrusted_source),
                                     else_=t.untrusted_source),
        },
    )  # fmt: skip
    conn.execute(stmt, rows)
    return len(rows)


def known(engine: Engine, run_id: str, digests: Iterable[str]) -> dict[str, Seen]:
    """What the run has seen of each digest (absent: never seen)."""
    wanted = sorted(set(digests))
    if not wanted:
        return {}
    c = run_values.c
    q = select(c.digest, c.trusted, c.untrusted, c.untrusted_source).where(
        c.run_id == run_id, c.digest.in_(wanted)
    )
    with reading(engine) as conn:
        return {r.digest: Seen(bool(r.trusted), bool(r.untrusted), r.untrusted_source)
                for r in conn.execute(q)}  # fmt: skip


def overlay_trusted(seen: Mapping[str, Seen], atoms: Iterable[Atom]) -> dict[str, Seen]:
    """`seen` with `atoms` (the task input, the policy's lists) counted as trusted."""
    out = dict(seen)
    for atom in atoms:
        prior = out.get(atom.digest)
        out[atom.digest] = Seen(True, prior.untrusted if prior else False,
                                prior.source if prior else None)  # fmt: skip
    return out


def list_values(engine: Engine, run_id: str, *, limit: int = 500) -> list[dict[str, Any]]:
    """The run's values for the API and console: untrusted-only first, then by first sight."""
    c = run_values.c
    q = (
        select(run_values)
        .where(c.run_id == run_id)
        .order_by(c.trusted, c.first_seen_at, c.kind, c.value)
        .limit(limit)
    )
    with reading(engine) as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    out = []
    for r in rows:
        origin = "both" if r["trusted"] and r["untrusted"] else (
            "trusted" if r["trusted"] else "untrusted")  # fmt: skip
        out.append({"kind": r["kind"], "value": r["value"], "origin": origin,
                    "trusted_source": r["trusted_source"],
                    "untrusted_source": r["untrusted_source"],
                    "first_seen_at": r["first_seen_at"].isoformat()})  # fmt: skip
    return out


def declassify(
    engine: Engine, run_id: str, value: str, *, actor: str, reason: str | None, now: datetime
) -> list[Atom]:
    """Marks a value trusted for this run (a person vouches for it), audited as
    `provenance.declassified`. Returns the atoms it covered."""
    atoms = sorted(atoms_of(value))
    with engine.begin() as conn:
        record(conn, run_id, atoms, trusted=True, source=f"declassified by {actor}", now=now)
        audit.append_in(conn, actor=actor, action="provenance.declassified", subject=run_id,
                        data={"value": value[:MAX_VALUE_CHARS], "reason": reason,
                              "atoms": [a.value for a in atoms][:50]}, now=now)  # fmt: skip
    return atoms
