"""One upstream MCP server (a stdio command or a Streamable HTTP URL) kept connected.

A supervisor task owns the client session: it connects, lists the tools, then watches the
connection (a tools/list probe every few seconds, or a failed call); when the server crashes it is
restarted with exponential backoff, and calls made meanwhile get a clear UpstreamError.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, ExitStack
from pathlib import Path
from typing import Any, TextIO

import anyio
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import get_default_environment, stdio_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

from tether.config import McpServerConfig
from tether.core.errors import ConfigError, UpstreamError, UpstreamTimeoutError

log = logging.getLogger("tether.mcp")

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
INITIAL_BACKOFF_S = 0.25
MAX_BACKOFF_S = 30.0
PROBE_EVERY_S = 5.0
PROBE_TIMEOUT_S = 10.0


class Upstream:
    """The live connection to one configured MCP server."""

    def __init__(
        self,
        config: McpServerConfig,
        *,
        log_dir: Path | None = None,
        on_tools: Callable[[Upstream], Awaitable[None]] | None = None,
    ) -> None:
        if not _NAME_RE.match(config.name):
            raise ConfigError(
                f"mcp_servers name {config.name!r} must be letters, digits, _ or - (it prefixes "
                "the server's tools as NAME.tool)"
            )
        if bool(config.command) == bool(config.url):
            raise ConfigError(
                f"mcp_servers entry {config.name!r} needs exactly one of `command` (stdio) or "
                "`url` (Streamable HTTP)"
            )
        self.config = config
        self.name = config.name
        self.tools: list[types.Tool] = []
        self.error: str | None = None
        # set when tether.yaml's entry for this server does not fit what it serves
        self.config_error: str | None = None
        self.restarts = 0
        self.client: Client | None = None
        self._log_dir = log_dir
        self._on_tools = on_tools
        self._first_attempt = anyio.Event()
        self._broken = anyio.Event()

    @property
    def connected(self) -> bool:
        return self.client is not None

    @property
    def serving(self) -> bool:
        """Connected and accepted: its tools are listed and callable."""
        return self.client is not None and self.config_error is None

    async def wait_first_attempt(self, timeout_s: float) -> None:
        with anyio.move_on_after(timeout_s):
            await self._first_attempt.wait()

    def _transport(self, errlog: TextIO | None) -> Any:
        if self.config.url:
            return self.config.url
        command = self.config.command or []
        params = StdioServerParameters(
            command=command[0],
            args=command[1:],
            env={**get_default_environment(), **self.config.env},
            cwd=self.config.cwd,
        )
        return stdio_client(params, errlog=errlog) if errlog is not None else stdio_client(params)

    def _client(self, errlog: TextIO | None) -> AbstractAsyncContextManager[Client]:
        return Client(self._transport(errlog), cache=None)

    async def run(self) -> None:
        """The supervisor loop; runs until cancelled."""
        backoff = INITIAL_BACKOFF_S
        while True:
            with ExitStack() as files:
                errlog = None
                if self._log_dir is not None and self.config.command:
                    self._log_dir.mkdir(parents=True, exist_ok=True)
                    path = self._log_dir / f"mcp-{self.name}.log"
                    errlog = files.enter_context(path.open("a", encoding="utf-8"))
                try:
                    async with self._client(errlog) as client:
                        self.tools = await _list_all_tools(client)
                        self.client = client
                        self.error = None
                        self._broken = anyio.Event()
                        if self._on_tools is not None:
                            await self._on_tools(self)
                        self._first_attempt.set()
                        backoff = INITIAL_BACKOFF_S
                        await self._watch(client)
                        raise UpstreamError("connection lost")
                except Exception as exc:  # the supervisor's boundary: any failure means restart
                    self.error = _describe(exc)
                    log.warning("MCP server %s failed (%s); restarting in %.2fs",
                                self.name, self.error, backoff)  # fmt: skip
                finally:
                    self.client = None
            self._first_attempt.set()
            self.restarts += 1
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _watch(self, client: Client) -> None:
        """Returns when the connection is gone: a failed call, or a probe that fails.

        The probe is tools/list (ping is gone from the 2026-07-28 protocol); a listing that
        differs from the last one is synced into the registry, so a description changed on a
        live server is caught without a restart.
        """
        while True:
            with anyio.move_on_after(PROBE_EVERY_S):
                await self._broken.wait()
                return
            try:
                with anyio.fail_after(PROBE_TIMEOUT_S):
                    tools = await _list_all_tools(client)
            except Exception:
                return
            if _dump(tools) != _dump(self.tools):
                self.tools = tools
                if self._on_tools is not None:
                    await self._on_tools(self)

    def _live(self) -> Client:
        client = self.client
        if client is None:
            reason = f" ({self.error})" if self.error else ""
            raise UpstreamError(
                f"MCP server {self.name!r} is unavailable{reason}; tether is restarting it, "
                "retry in a few seconds"
            )
        return client

    async def _guarded(
        self, op: str, timeout_s: float, call: Callable[[Client], Awaitable[Any]]
    ) -> Any:
        client = self._live()
        try:
            with anyio.fail_after(timeout_s):
                return await call(client)
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self._broken.set()
                raise UpstreamError(
                    f"MCP server {self.name!r} closed the connection during {op}; tether is "
                    "restarting it, retry in a few seconds"
                ) from None
            # the server answered with a protocol error; the link itself is fine
            raise UpstreamError(f"MCP server {self.name!r} refused {op}: {exc}") from None
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"MCP server {self.name!r} did not answer {op} within {timeout_s:g}s"
            ) from None
        except Exception as exc:
            self._broken.set()
            raise UpstreamError(
                f"MCP server {self.name!r} failed during {op} ({_describe(exc)}); tether is "
                "restarting it, retry in a few seconds"
            ) from None

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None, *, timeout_s: float
    ) -> types.CallToolResult:
        result: types.CallToolResult = await self._guarded(
            f"tools/call {name}", timeout_s, lambda c: c.call_tool(name, arguments)
        )
        return result

    async def list_resources(self, *, timeout_s: float) -> list[types.Resource]:
        res = await self._guarded("resources/list", timeout_s, lambda c: c.list_resources())
        return list(res.resources)

    async def list_resource_templates(self, *, timeout_s: float) -> list[types.ResourceTemplate]:
        res = await self._guarded(
            "resources/templates/list", timeout_s, lambda c: c.list_resource_templates()
        )
        return list(res.resource_templates)

    async def read_resource(self, uri: str, *, timeout_s: float) -> types.ReadResourceResult:
        result: types.ReadResourceResult = await self._guarded(
            f"resources/read {uri}", timeout_s, lambda c: c.read_resource(uri)
        )
        return result

    async def list_prompts(self, *, timeout_s: float) -> list[types.Prompt]:
        res = await self._guarded("prompts/list", timeout_s, lambda c: c.list_prompts())
        return list(res.prompts)

    async def get_prompt(
        self, name: str, arguments: dict[str, str] | None, *, timeout_s: float
    ) -> types.GetPromptResult:
        result: types.GetPromptResult = await self._guarded(
            f"prompts/get {name}", timeout_s, lambda c: c.get_prompt(name, arguments)
        )
        return result

    def supports(self, capability: str) -> bool:
        client = self.client
        if client is None or self.config_error is not None:
            return False
        return getattr(client.server_capabilities, capability, None) is not None


async def _list_all_tools(client: Client) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def _dump(tools: list[types.Tool]) -> list[dict[str, Any]]:
    return [t.model_dump(mode="json", exclude_none=True) for t in tools]


def _describe(exc: BaseException) -> str:
    """The innermost useful message of an exception (task groups wrap them in groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "…"
