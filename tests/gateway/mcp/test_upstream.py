"""One upstream connection on its own: a bad config entry, a command that cannot start (clear
errors, retried with backoff), and tether's demo server over stdio."""

from __future__ import annotations

import sys

import anyio
import pytest

from tether.config import McpServerConfig
from tether.core.errors import ConfigError, UpstreamError
from tether.gateway.mcp.upstream import Upstream


def test_an_entry_needs_exactly_one_of_command_or_url() -> None:
    with pytest.raises(ConfigError, match="exactly one of"):
        Upstream(McpServerConfig(name="x"))
    with pytest.raises(ConfigError, match="exactly one of"):
        Upstream(McpServerConfig(name="x", command=["a"], url="http://127.0.0.1:1/mcp"))
    with pytest.raises(ConfigError, match="letters, digits"):
        Upstream(McpServerConfig(name="my.server", command=["a"]))


async def test_a_server_that_cannot_start_gives_a_clear_error() -> None:
    upstream = Upstream(McpServerConfig(name="ghost", command=["/nonexistent/mcp-server"]))
    async with anyio.create_task_group() as tg:
        tg.start_soon(upstream.run)
        await upstream.wait_first_attempt(10)
        assert not upstream.connected and upstream.error
        with pytest.raises(UpstreamError, match=r"'ghost' is unavailable .*retry"):
            await upstream.call_tool("x", {}, timeout_s=1)
        await anyio.sleep(0.6)
        assert upstream.restarts >= 2  # retried with backoff
        tg.cancel_scope.cancel()


async def test_demo_server_over_stdio(tmp_path: object) -> None:
    seen: list[int] = []

    async def on_tools(up: Upstream) -> None:
        seen.append(len(up.tools))

    config = McpServerConfig(
        name="demo", command=[sys.executable, "-m", "tether.gateway.mcp.demo_server"]
    )
    upstream = Upstream(config, on_tools=on_tools)
    async with anyio.create_task_group() as tg:
        tg.start_soon(upstream.run)
        await upstream.wait_first_attempt(20)
        assert upstream.connected and seen == [4]
        assert {t.name for t in upstream.tools} == {
            "send_email", "delete_record", "lookup_customer", "fetch_page",
        }  # fmt: skip
        result = await upstream.call_tool(
            "lookup_customer", {"email": "ada@example.com"}, timeout_s=10
        )
        assert not result.is_error and "Ada Lovelace" in result.content[0].text  # type: ignore[union-attr]
        assert upstream.supports("resources") and upstream.supports("prompts")
        unknown = await upstream.call_tool("nope", {}, timeout_s=10)
        assert unknown.is_error  # MCPServer answers an unknown tool with a tool error
        tg.cancel_scope.cancel()
