from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine

from tether.gateway.mcp.guard import Guard
from tether.store import tools as registry

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_every_tag_of_a_returned_tool_joins_the_run(db: Engine) -> None:
    """data_flow rules may name any tag, not only `untrusted`."""
    guard = Guard(db, redis=None, approval_timeout_s=60)
    guard.mark_returned("run_tags1", ["read", "untrusted"], now=NOW, agent="a")
    guard.mark_returned("run_tags1", ["pii"], now=NOW, agent="a")
    assert registry.run_tags(db, "run_tags1") == frozenset({"read", "untrusted", "pii"})
    guard.mark_returned("run_tags2", [], now=NOW, agent="a")
    assert registry.run_tags(db, "run_tags2") == frozenset()
