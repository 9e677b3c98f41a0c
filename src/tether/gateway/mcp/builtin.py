"""Tools tether serves itself through /mcp (today `memory.*`), beside the upstream servers: the
gateway lists, decides, records and audits them exactly as it does an upstream's tools."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import mcp_types as types

from tether.gateway.mcp.spans import CallContext


class BuiltinServer(Protocol):
    """An in-process tool server; its tools are named `<name>.<tool>` like an upstream's."""

    name: str
    # tool -> the tags the registry gives it (read, write, irreversible, ...)
    tags: Mapping[str, tuple[str, ...]]

    def tools(self) -> list[types.Tool]: ...

    async def call(
        self, call: CallContext, headers: Mapping[str, str], tool: str, arguments: dict[str, Any]
    ) -> types.CallToolResult: ...
