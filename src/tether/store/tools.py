"""The tool registry: every tool an agent can reach, its tags, owner and rate limit, and the
sha256 pin of its description and input schema. A tool seen for the first time is pinned and
approved; a later change of either ("rug pull") marks it `changed`, blocked until re-approved.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from tether.core.errors import BadRequestError, NotFoundError
from tether.core.tags import suggest_tag, tags_from_annotations, unknown_tags
from tether.store import audit
from tether.store.engine import reading
from tether.store.tables import runs, tools

KINDS = frozenset({"mcp", "http", "sdk"})
# runs.attributes key holding the data-flow tags a run has picked up (e.g. "untrusted")
RUN_TAGS_KEY = "tether.run_tags"


@dataclass(frozen=True)
class ToolSpec:
    """A tool as a source (an upstream MCP server, config, the API, the SDK) describes it."""

    name: str
    server: str
    kind: str
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    tags: tuple[str, ...] = ()
    annotations: dict[str, Any] | None = None
    owner: str | None = None
    rate_limit: str | None = None
    url: str | None = None
    systems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tool:
    name: str
    server: str
    kind: str
    description: str | None
    input_schema: dict[str, Any] | None
    tags: tuple[str, ...]
    owner: str | None
    rate_limit: str | None
    url: str | None
    pinned_hash: str | None
    current_hash: str | None
    status: str
    annotations: dict[str, Any] | None
    first_seen_at: datetime
    updated_at: datetime
    configured_systems: tuple[str, ...] = ()

    @property
    def blocked(self) -> bool:
        return self.status != "approved"

    @property
    def systems(self) -> frozenset[str]:
        """The systems a policy's `systems:` checks it against: as configured, else the
        server's name (`crm.lookup` belongs to system `crm`)."""
        return frozenset(self.configured_systems or (self.server,))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "server": self.server,
            "kind": self.kind,
            "description": self.description,
            "input_schema": self.input_schema,
            "tags": list(self.tags),
            "owner": self.owner,
            "rate_limit": self.rate_limit,
            "url": self.url,
            "status": self.status,
            "pinned_hash": self.pinned_hash,
            "current_hash": self.current_hash,
            "annotations": self.annotations,
            "systems": sorted(self.systems),
            "first_seen_at": self.first_seen_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def tool_hash(description: str | None, input_schema: dict[str, Any] | None) -> str:
    """sha256 over the canonical JSON of what a model reads: the description and the schema."""
    doc = {"description": description or "", "input_schema": input_schema or {}}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    out = tuple(sorted({t.strip() for t in tags if t.strip()}))
    unknown = unknown_tags(out)
    if unknown:
        raise BadRequestError(f"unknown tool tag {unknown[0]!r}: {suggest_tag(unknown[0])}")
    return out


def _row(row: Any) -> Tool:
    r = row._mapping
    return Tool(
        name=r["name"], server=r["server"], kind=r["kind"], description=r["description"],
        input_schema=r["input_schema"], tags=tuple(r["tags"] or ()), owner=r["owner"],
        rate_limit=r["rate_limit"], url=r["url"], pinned_hash=r["pinned_hash"],
        current_hash=r["current_hash"], status=r["status"], annotations=r["annotations"],
        first_seen_at=r["first_seen_at"], updated_at=r["updated_at"],
        configured_systems=tuple(r["systems"] or ()),
    )  # fmt: skip


def sync_tools(
    engine: Engine, specs: Sequence[ToolSpec], *, now: datetime, actor: str = "tether"
) -> list[Tool]:
    """Upserts `specs`; pins new tools, flags changed ones. Returns the stored tools."""
    out: list[Tool] = []
    with engine.begin() as conn:
        for spec in specs:
            out.append(_sync_one(conn, spec, now=now, actor=actor))
    return out


def _sync_one(conn: Connection, spec: ToolSpec, *, now: datetime, actor: str) -> Tool:
    if spec.kind not in KINDS:
        raise BadRequestError(f"unknown tool kind {spec.kind!r}; use mcp, http or sdk")
    tags = check_tags([*spec.tags, *tags_from_annotations(spec.annotations)])
    digest = tool_hash(spec.description, spec.input_schema)
    values: dict[str, Any] = {
        "server": spec.server, "kind": spec.kind, "description": spec.description,
        "input_schema": spec.input_schema, "tags": list(tags), "owner": spec.owner,
        "rate_limit": spec.rate_limit, "url": spec.url, "annotations": spec.annotations,
        "current_hash": digest, "updated_at": now, "systems": list(spec.systems) or None,
    }  # fmt: skip
    q = select(tools).where(tools.c.name == spec.name)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    existing = conn.execute(q).first()
    if existing is None and _insert_new(conn, spec.name, digest, values, now):
        audit.append_in(
            conn,
            actor=actor,
            action="tool.pinned",
            subject=spec.name,
            # the pinned text itself, so a later change can be shown as a diff
            data={
                "sha256": digest,
                "tags": list(tags),
                "kind": spec.kind,
                "description": spec.description,
                "input_schema": spec.input_schema,
            },
            now=now,
        )
    else:
        if existing is None:  # another process pinned it first; compare against its pin
            existing = conn.execute(q).one()
        old = _row(existing)
        status = "approved" if digest == old.pinned_hash else "changed"
        values["status"] = status
        conn.execute(update(tools).where(tools.c.name == spec.name).values(**values))
        if status == "changed" and old.current_hash != digest:
            audit.append_in(
                conn,
                actor=actor,
                action="tool.changed",
                subject=spec.name,
                data={"pinned": old.pinned_hash, "seen": digest},
                now=now,
            )
    return _row(conn.execute(select(tools).where(tools.c.name == spec.name)).one())


def _insert_new(
    conn: Connection, name: str, digest: str, values: dict[str, Any], now: datetime
) -> bool:
    """Pins a tool seen for the first time; False if another server process just did."""
    try:
        with conn.begin_nested():
            conn.execute(insert(tools).values(name=name, pinned_hash=digest, status="approved",
                                              first_seen_at=now, **values))  # fmt: skip
    except IntegrityError:
        return False
    return True


def ensure_sdk_tool(engine: Engine, name: str, tags: Iterable[str], *, now: datetime) -> Tool:
    """The registry entry for a tool first met through POST /api/v1/decide (kind `sdk`)."""
    found = get_tool(engine, name)
    if found is not None:
        return found
    server = name.split(".", 1)[0] if "." in name else "sdk"
    return sync_tools(engine, [ToolSpec(name=name, server=server, kind="sdk", tags=tuple(tags))],
                      now=now, actor="sdk")[0]  # fmt: skip


def get_tool(engine: Engine, name: str) -> Tool | None:
    with reading(engine) as conn:
        row = conn.execute(select(tools).where(tools.c.name == name)).first()
    return _row(row) if row else None


def require_tool(engine: Engine, name: str) -> Tool:
    found = get_tool(engine, name)
    if found is None:
        raise NotFoundError(f"no tool named {name!r}; see `tether tools list`")
    return found


def list_tools(
    engine: Engine, *, server: str | None = None, status: str | None = None
) -> list[Tool]:
    q = select(tools).order_by(tools.c.name)
    if server:
        q = q.where(tools.c.server == server)
    if status:
        q = q.where(tools.c.status == status)
    with reading(engine) as conn:
        return [_row(r) for r in conn.execute(q)]


def approve_tool(engine: Engine, name: str, *, actor: str, now: datetime) -> Tool:
    """Re-pins a tool to its current description and schema and unblocks it."""
    with engine.begin() as conn:
        row = conn.execute(select(tools).where(tools.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"no tool named {name!r}; see `tether tools list`")
        old = _row(row)
        conn.execute(
            update(tools)
            .where(tools.c.name == name)
            .values(pinned_hash=old.current_hash, status="approved", updated_at=now)
        )
        audit.append_in(
            conn,
            actor=actor,
            action="tool.approved",
            subject=name,
            data={
                "previous": old.pinned_hash,
                "sha256": old.current_hash,
                "description": old.description,
                "input_schema": old.input_schema,
            },
            now=now,
        )
        return _row(conn.execute(select(tools).where(tools.c.name == name)).one())


def pinned_text(engine: Engine, name: str) -> dict[str, Any] | None:
    """The description and schema the tool is pinned to (from its last pin in the audit log)."""
    entries, _ = audit.list_entries(engine, subject=name, limit=100)
    for entry in entries:
        data = entry.data if isinstance(entry.data, dict) else {}
        if entry.action in ("tool.pinned", "tool.approved") and "description" in data:
            return {"description": data["description"], "input_schema": data["input_schema"]}
    return None


def pin_diff(engine: Engine, tool: Tool) -> str | None:
    """A unified diff from the pinned description and schema to what is served now."""
    pinned = pinned_text(engine, tool.name)
    if pinned is None or tool.status != "changed":
        return None

    def lines(description: str | None, schema: Any) -> list[str]:
        text = (description or "") + "\n" + json.dumps(schema or {}, indent=2, sort_keys=True)
        return text.splitlines(keepends=True)

    return "".join(difflib.unified_diff(
        lines(pinned["description"], pinned["input_schema"]),
        lines(tool.description, tool.input_schema),
        fromfile=f"{tool.name} (pinned)", tofile=f"{tool.name} (served now)",
    ))  # fmt: skip


# ---------------------------------------------------------------- data-flow tags of a run


def run_tags(engine: Engine, run_id: str) -> frozenset[str]:
    """The data-flow tags a run carries, e.g. {"untrusted"} after an untrusted tool returned."""
    with reading(engine) as conn:
        attrs = conn.execute(select(runs.c.attributes).where(runs.c.id == run_id)).scalar()
    return frozenset((attrs or {}).get(RUN_TAGS_KEY, ()))


def add_run_tags(conn: Connection, run_id: str, new: Iterable[str], *, now: datetime) -> None:
    """Adds data-flow tags to a run that exists (inside the caller's transaction)."""
    q = select(runs.c.attributes).where(runs.c.id == run_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).first()
    if row is None:
        return
    attrs = dict(row[0] or {})
    tags = set(attrs.get(RUN_TAGS_KEY, ())) | set(new)
    if tags == set(attrs.get(RUN_TAGS_KEY, ())):
        return
    attrs[RUN_TAGS_KEY] = sorted(tags)
    conn.execute(update(runs).where(runs.c.id == run_id).values(attributes=attrs, updated_at=now))
