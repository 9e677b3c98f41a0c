"""Tools tether serves itself through /mcp (today `memory.*`), beside the upstream servers: the
gateway lists, decides, records and audits them exactly as it does an upstream's tools."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import mcp_types as types
from sqlalchemy import Engine

from tether.gateway.mcp.spans import CallContext
from tether.store import tools as registry


class BuiltinServer(Protocol):
    """An in-process tool server; its tools are named `<name>.<tool>` like an upstream's."""

    name: str
    # tool -> the tags the registry gives it (read, write, irreversible, ...)
    tags: Mapping[str, tuple[str, ...]]

    def tools(self) -> list[types.Tool]: ...

    async def call(
        self, call: CallContext, headers: Mapping[str, str], tool: str, arguments: dict[str, Any]
    ) -> types.CallToolResult: ...


def sync_builtins(engine: Engine, builtins: Sequence[BuiltinServer], *, now: datetime) -> None:
    """Registers (pins) the built-in servers' tools, as an upstream's are when it connects: at
    start-up, before anything has loaded the MCP SDK."""
    specs = [
        registry.ToolSpec(
            name=f"{b.name}.{t.name}", server=b.name, kind="mcp",
            description=t.description or "", input_schema=dict(t.input_schema),
            tags=tuple(b.tags.get(t.name, ())),
            annotations=t.annotations.model_dump(exclude_none=True) if t.annotations else None,
        )
        for b in builtins
        for t in b.tools()
    ]  # fmt: skip
    if specs:
        registry.sync_tools(engine, specs, now=now, actor="tether")
