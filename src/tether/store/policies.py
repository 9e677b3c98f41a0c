"""Versioned boundary policies: apply (a new version only when the text changed), history, diff,
and `get` with a small in-process cache of compiled policies keyed by version.
"""

from __future__ import annotations

import difflib
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select, text

from tether.core.errors import NotFoundError
from tether.core.policy import Policy, PolicyError, Problem
from tether.core.policy_schema import load_document
from tether.store.audit import append_in
from tether.store.engine import reading
from tether.store.tables import policies

_LOCK_KEY = 7337_0016
_CACHE_MAX = 512


@dataclass(frozen=True)
class PolicyVersion:
    agent: str
    version: int
    sha256: str
    applied_by: str | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "version": self.version,
            "sha256": self.sha256,
            "applied_by": self.applied_by,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Applied:
    agent: str
    version: int
    changed: bool


class _Cache:
    """Compiled policies by (agent, version); versions never change once written."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[tuple[str, int], Policy] = {}

    def get(self, key: tuple[str, int]) -> Policy | None:
        return self.items.get(key)

    def put(self, key: tuple[str, int], policy: Policy) -> None:
        with self.lock:
            if len(self.items) >= _CACHE_MAX:
                self.items.clear()
            self.items[key] = policy


_caches: weakref.WeakKeyDictionary[Engine, _Cache] = weakref.WeakKeyDictionary()


def _cache(engine: Engine) -> _Cache:
    cache = _caches.get(engine)
    if cache is None:
        cache = _caches.setdefault(engine, _Cache())
    return cache


def apply_policy(
    engine: Engine, source: str, applied_by: str, now: datetime, *, file: str = "<policy>"
) -> Applied:
    """Validates `source` (PolicyError on problems) and stores it as the agent's next version,
    unless it is the same text as the current one. Each new version is audited."""
    policy = Policy.parse(source, file)
    _check_registry_lists(engine, policy, source, file)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        current = conn.execute(
            select(policies.c.version, policies.c.sha256)
            .where(policies.c.agent == policy.agent)
            .order_by(policies.c.version.desc())
            .limit(1)
        ).first()
        if current is not None and current.sha256 == policy.sha256:
            return Applied(policy.agent, current.version, False)
        version = 1 if current is None else current.version + 1
        conn.execute(
            insert(policies).values(
                agent=policy.agent,
                version=version,
                source=source,
                document=policy.document,
                sha256=policy.sha256,
                applied_by=applied_by,
                created_at=now,
            )
        )
        append_in(
            conn,
            applied_by,
            "policy.applied",
            policy.agent,
            {"version": version, "sha256": policy.sha256, "previous": current and current.version},
            now,
        )
    _cache(engine).put((policy.agent, version), policy)
    return Applied(policy.agent, version, True)


def _check_registry_lists(engine: Engine, policy: Policy, source: str, file: str) -> None:
    """A policy naming a registry list that does not exist is refused, with the line."""
    from tether.store import lists

    if not policy.registry_lists:
        return
    have = lists.existing(engine, policy.registry_lists.values())
    missing = {k: v for k, v in policy.registry_lists.items() if v not in have}
    if not missing:
        return
    _, lines = load_document(source, file)
    raise PolicyError([
        Problem(lines.find(("lists", local)), f"lists.{local}.registry",
                f"no registry list named `{name}`",
                f"create it first (`tether lists set {name} VALUE...` or PUT /api/v1/lists/"
                f"{name}), or correct the name")
        for local, name in sorted(missing.items())
    ], file)  # fmt: skip


def agents_using_list(engine: Engine, name: str) -> list[str]:
    """The agents whose latest policy names the registry list `name`."""
    out = []
    for version in list_latest(engine):
        policy = get(engine, version.agent, version.version)
        if policy is not None and name in policy.registry_lists.values():
            out.append(version.agent)
    return out


def latest_version(engine: Engine, agent: str) -> int | None:
    with reading(engine) as conn:
        v = conn.execute(
            select(func.max(policies.c.version)).where(policies.c.agent == agent)
        ).scalar()
    return int(v) if v is not None else None


def get(engine: Engine, agent: str, version: int | None = None) -> Policy | None:
    """The agent's policy (latest, or `version`), compiled; None when there is none."""
    cache = _cache(engine)
    if version is None:
        version = latest_version(engine, agent)
        if version is None:
            return None
    hit = cache.get((agent, version))
    if hit is not None:
        return hit
    with reading(engine) as conn:
        source = conn.execute(
            select(policies.c.source).where(
                policies.c.agent == agent, policies.c.version == version
            )
        ).scalar()
    if source is None:
        return None
    policy = Policy.parse(source, f"{agent} v{version}")
    cache.put((agent, version), policy)
    return policy


def require(engine: Engine, agent: str, version: int | None = None) -> Policy:
    policy = get(engine, agent, version)
    if policy is None:
        if version is None:
            raise NotFoundError(
                f"agent {agent} has no policy; apply one with `tether policy apply FILE`"
            )
        raise NotFoundError(
            f"agent {agent} has no policy version {version}; "
            f"`tether policy show {agent} --history` lists versions"
        )
    return policy


def _version(row: Any) -> PolicyVersion:
    return PolicyVersion(row.agent, row.version, row.sha256, row.applied_by, row.created_at)


def history(engine: Engine, agent: str) -> list[PolicyVersion]:
    """Every version of the agent's policy, newest first."""
    with reading(engine) as conn:
        rows = conn.execute(
            select(
                policies.c.agent,
                policies.c.version,
                policies.c.sha256,
                policies.c.applied_by,
                policies.c.created_at,
            )
            .where(policies.c.agent == agent)
            .order_by(policies.c.version.desc())
        ).all()
    return [_version(r) for r in rows]


def list_latest(engine: Engine) -> list[PolicyVersion]:
    """The newest version of every agent's policy, by agent name."""
    latest = (
        select(policies.c.agent, func.max(policies.c.version).label("v"))
        .group_by(policies.c.agent)
        .subquery()
    )
    q = (
        select(
            policies.c.agent,
            policies.c.version,
            policies.c.sha256,
            policies.c.applied_by,
            policies.c.created_at,
        )
        .join(latest, (policies.c.agent == latest.c.agent) & (policies.c.version == latest.c.v))
        .order_by(policies.c.agent)
    )
    with reading(engine) as conn:
        return [_version(r) for r in conn.execute(q).all()]


def diff(engine: Engine, agent: str, v1: int, v2: int) -> str:
    """A unified diff of the source text of two versions."""
    a, b = require(engine, agent, v1), require(engine, agent, v2)
    return "".join(
        difflib.unified_diff(
            a.source.splitlines(keepends=True),
            b.source.splitlines(keepends=True),
            fromfile=f"{agent} v{v1}",
            tofile=f"{agent} v{v2}",
        )
    )


def load_folder(engine: Engine, folder: Path, now: datetime) -> list[Applied]:
    """Applies every *.yaml / *.yml in `folder` (sorted), as at server start."""
    out = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        out.append(apply_policy(engine, path.read_text(), f"file:{path.name}", now, file=str(path)))
    return out


def describe(engine: Engine, agent: str, version: int | None = None) -> dict[str, Any]:
    """The API resource of one version: its history row plus `source` and `document`."""
    number = version or latest_version(engine, agent)
    policy = require(engine, agent, number)
    found = next(v for v in history(engine, agent) if v.version == number)
    return {**found.to_dict(), "source": policy.source, "document": policy.document}


def suggestion(engine: Engine, agent: str) -> dict[str, Any]:
    """`tether policy suggest`: a proposed policy (YAML) from the registry and recorded runs."""
    from tether.core.suggest import suggest
    from tether.store.usage import agent_usage, registry_tools

    usage = agent_usage(engine, agent)
    tools = registry_tools(engine)
    if not tools:
        raise NotFoundError("the tool registry is empty; start `tether serve` with mcp_servers "
                            "(or register tools) before asking for a suggestion")  # fmt: skip
    source = suggest(agent, tools, usage)
    Policy.parse(source, f"<suggestion for {agent}>")  # a suggestion is always a valid policy
    return {"agent": agent, "runs": usage.runs, "tools_used": sorted(usage.tools),
            "source": source}  # fmt: skip
