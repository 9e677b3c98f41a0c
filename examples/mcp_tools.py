"""Tools through tether's MCP gateway, for the examples: one call per tool use, made in the
agent's run (`X-Tether-Run-Id`) with the agent's key, so the gateway decides it by the agent's
policy, records it in the run and holds it for a person when the policy says so (the call then
waits for the decision). A refusal comes back as `ToolRefused`.

    text = call_tool(url, key, run_id, "demo.lookup_customer", {"email": "ada@example.com"})

With the official MCP SDK 2.x (tether's own environment) or 1.x (CrewAI's, which needs mcp<2).
"""

from __future__ import annotations

from typing import Any

import anyio
from mcp.client.streamable_http import streamable_http_client

try:
    import httpx2
    from mcp import Client
except ImportError:  # mcp 1.x
    Client = None


class ToolRefused(Exception):
    """tether refused the call (policy denial, denied approval, rate limit) or the tool failed."""


async def acall_tool(url: str, key: str, run_id: str, tool: str, arguments: dict[str, Any]) -> str:
    """Calls `tool` through the gateway at `url`; its text, or ToolRefused."""
    headers = {"Authorization": f"Bearer {key}", "X-Tether-Run-Id": run_id}
    if Client is None:
        return await _acall_tool_v1(url, headers, tool, arguments)
    # no read timeout: a call held for approval waits as long as the person takes
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=None)) as http,
        Client(streamable_http_client(url.rstrip("/") + "/mcp", http_client=http)) as client,
    ):
        result = await client.call_tool(tool, arguments)
    text = " ".join(getattr(part, "text", "") for part in result.content)
    if result.is_error:
        raise ToolRefused(f"{tool}: {text}")
    return text


async def _acall_tool_v1(url: str, headers: dict[str, str], tool: str, arguments: dict[str, Any]
                         ) -> str:  # fmt: skip
    import httpx
    from mcp import ClientSession

    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=None)) as http,
        streamable_http_client(url.rstrip("/") + "/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool(tool, arguments)
    text = " ".join(getattr(part, "text", "") for part in result.content)
    if result.isError:
        raise ToolRefused(f"{tool}: {text}")
    return text


def call_tool(url: str, key: str, run_id: str, tool: str, arguments: dict[str, Any]) -> str:
    """`acall_tool` for synchronous agents."""
    out: str = anyio.run(acall_tool, url, key, run_id, tool, arguments)
    return out
