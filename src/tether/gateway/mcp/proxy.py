"""The aggregating MCP server behind /mcp: upstream tools as "server.tool", listed to each agent
only when its policy grants them, every call decided by the guard, held for approval when
needed (with progress notifications while it waits), forwarded, and recorded as a tool span.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from sqlalchemy import Engine

from tether._version import __version__
from tether.config import Settings
from tether.core.errors import TetherError, UpstreamError
from tether.core.principal import Principal
from tether.core.tags import tags_for_tools
from tether.gateway.mcp.builtin import BuiltinServer
from tether.gateway.mcp.guard import Guard
from tether.gateway.mcp.spans import (
    PRINCIPAL_KEY,
    CallContext,
    as_json,
    record_span,
    run_for_request,
)
from tether.gateway.mcp.surfaces import Surfaces
from tether.gateway.mcp.upstream import Upstream
from tether.store import approvals, evals, policies
from tether.store import tools as registry

log = logging.getLogger("tether.mcp")

CALL_TIMEOUT_S = 120.0
LIST_TIMEOUT_S = 10.0
PROGRESS_EVERY_S = 1.0
STARTUP_WAIT_S = 15.0


def _now() -> datetime:
    return datetime.now(UTC)


def error_result(text: str, **tether: Any) -> types.CallToolResult:
    """A tool error the agent's model can read (is_error), with tether's decision alongside."""
    return types.CallToolResult(
        content=[types.TextContent(text=text)],
        structured_content={"tether": tether} if tether else None,
        is_error=True,
    )


def result_text(result: types.CallToolResult) -> str:
    parts = [b.text if isinstance(b, types.TextContent) else f"[{b.type}]" for b in result.content]
    return "\n".join(parts)


UNTRUSTED = "untrusted"
# Per-result trust an upstream may declare: `_meta: {"tether/trust": "untrusted"}` on a tool
# result (or a resource / prompt result) marks that one result untrusted. It can only add
# distrust: "trusted" never clears the tag a tool or rule gives.
TRUST_META_KEY = "tether/trust"


def result_trust(result: Any) -> frozenset[str]:
    meta = getattr(result, "meta", None) or {}
    return frozenset({UNTRUSTED}) if meta.get(TRUST_META_KEY) == UNTRUSTED else frozenset()


def fixture_result(output: Any, schema: dict[str, Any] | None) -> types.CallToolResult:
    """A scripted tool output as the tool's result: text as given, anything else as JSON. An
    object is also the structured content (it must fit the tool's output schema); a text, for a
    tool that declares an output schema, is `{"result": text}`, the wrapping the MCP SDK gives a
    plain return value."""
    text = output if isinstance(output, str) else as_json(output)
    structured = output if isinstance(output, dict) else None
    if structured is None and schema is not None:
        structured = {"result": output}
    return types.CallToolResult(
        content=[types.TextContent(text=text or "")], structured_content=structured
    )


def result_payload(result: types.CallToolResult) -> list[Any]:
    """What a tool result brings into the run: its text blocks and structured content."""
    out: list[Any] = [b.text for b in result.content if isinstance(b, types.TextContent)]
    if result.structured_content is not None:
        out.append(result.structured_content)
    return out


class Gateway:
    """Owns the upstream connections and the low-level MCP server that serves /mcp."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        guard: Guard,
        *,
        wakers: approvals.Wakers,
        announce: Callable[[approvals.Approval], None],
        builtins: Sequence[BuiltinServer] = (),
    ) -> None:
        self.engine = engine
        # tool servers tether runs itself (memory), governed exactly like the upstreams
        self.builtins = {b.name: b for b in builtins}
        self.guard = guard
        self.wakers = wakers  # this process's approval wake-ups (decisions made here)
        self.announce = announce  # tells people a call is waiting (webhooks)
        self.redact = tuple(settings.redact_fields)
        # run id -> the tool outputs its eval task scripted (empty for any other run)
        self._fixtures: dict[str, dict[str, Any]] = {}
        logs = settings.home / "logs"
        self.upstreams = {
            c.name: Upstream(c, log_dir=logs, on_tools=self._sync_tools)
            for c in settings.mcp_servers
        }
        self.surfaces = Surfaces(self.engine, guard, self.upstreams, self._call_context,
                                 self.redact)  # fmt: skip
        self.server: Server[Any] = Server(
            "tether",
            version=__version__,
            instructions="tether MCP gateway: tools are named server.tool.",
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.surfaces.list_resources,
            on_list_resource_templates=self.surfaces.list_resource_templates,
            on_read_resource=self.surfaces.read_resource,
            on_list_prompts=self.surfaces.list_prompts,
            on_get_prompt=self.surfaces.get_prompt,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Starts every upstream's supervisor; waits (bounded) for their first connection. (The
        built-in servers' tools are registered at start-up: builtin.sync_builtins.)"""
        async with anyio.create_task_group() as tg:
            for upstream in self.upstreams.values():
                tg.start_soon(upstream.run)
            with anyio.move_on_after(STARTUP_WAIT_S):
                for upstream in self.upstreams.values():
                    await upstream.wait_first_attempt(STARTUP_WAIT_S)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    async def _sync_tools(self, upstream: Upstream) -> None:
        names = [t.name for t in upstream.tools]
        tags, unmatched = tags_for_tools(upstream.config.tags, names)
        systems, unmatched_systems = tags_for_tools(upstream.config.systems, names)
        if unmatched_systems:  # a misspelt key would leave a tool in its server's system only
            unmatched = [*unmatched, *(f"systems:{k}" for k in unmatched_systems)]
        if unmatched:
            # Fail closed: a misspelt tool under `tags:` would serve that tool without its tags
            # (an untrusted reader not marked untrusted). Refuse the server until fixed.
            served = ", ".join(sorted(t.name for t in upstream.tools)) or "none"
            upstream.config_error = (
                f"tether.yaml mcp_servers[{upstream.name}].tags (or .systems) names "
                f"{', '.join(unmatched)}, "
                f"which the server does not offer (it serves: {served}); fix the name or glob "
                "and restart tether"
            )
            log.error("refusing MCP server %s: %s", upstream.name, upstream.config_error)
            return
        upstream.config_error = None
        specs = [
            registry.ToolSpec(
                name=f"{upstream.name}.{t.name}", server=upstream.name, kind="mcp",
                description=t.description or "", input_schema=dict(t.input_schema),
                tags=tuple(sorted(tags.get(t.name, ()))),
                annotations=t.annotations.model_dump(exclude_none=True) if t.annotations else None,
                systems=tuple(sorted(systems.get(t.name, ()))),
            )
            for t in upstream.tools
        ]  # fmt: skip
        actor = f"mcp:{upstream.name}"
        await anyio.to_thread.run_sync(
            lambda: registry.sync_tools(self.engine, specs, now=_now(), actor=actor)
        )

    # ------------------------------------------------------------ identity

    def _call_context(self, ctx: Any) -> CallContext:
        request = ctx.request
        principal: Principal | None = request.scope.get(PRINCIPAL_KEY) if request else None
        if principal is None:  # the endpoint authenticates every request; this is a bug guard
            raise MCPError(code=INVALID_PARAMS, message="unauthenticated MCP request")
        headers: Mapping[str, str] = request.headers
        run_id, attribution = run_for_request(headers, principal.agent)
        return CallContext(principal.agent, principal.actor, run_id, attribution)

    # ------------------------------------------------------------ tools

    async def list_tools(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        call = self._call_context(ctx)

        def visible() -> set[str]:
            policy = policies.get(self.engine, call.agent) if call.agent else None
            names = set()
            for tool in registry.list_tools(self.engine):
                if self.guard.preview(policy, call.agent, tool).outcome != "deny":
                    names.add(tool.name)
            return names

        granted = await anyio.to_thread.run_sync(visible)
        out: list[types.Tool] = []
        for upstream in self.upstreams.values():
            for tool in upstream.tools if upstream.serving else []:
                name = f"{upstream.name}.{tool.name}"
                if name in granted:
                    out.append(tool.model_copy(update={"name": name}))
        for builtin in self.builtins.values():
            for tool in builtin.tools():
                name = f"{builtin.name}.{tool.name}"
                if name in granted:
                    out.append(tool.model_copy(update={"name": name}))
        for entry in await anyio.to_thread.run_sync(registry.list_tools, self.engine):
            if entry.kind == "http" and entry.name in granted:
                out.append(
                    types.Tool(
                        name=entry.name,
                        description=entry.description,
                        input_schema=entry.input_schema or {"type": "object"},
                    )
                )
        return types.ListToolsResult(tools=out)

    async def call_tool(
        self, ctx: Any, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        call = self._call_context(ctx)
        name, arguments = params.name, dict(params.arguments or {})
        started = _now()
        verdict = await anyio.to_thread.run_sync(lambda: self.guard.check(
            agent=call.agent, run_id=call.run_id, name=name, arguments=arguments,
            now=started, actor=call.actor,
        ))  # fmt: skip
        d = verdict.decision
        info = verdict.to_dict()
        held_span: dict[str, Any] | None = None
        if verdict.approval is not None:
            self.announce(verdict.approval)
            final, held_span = await self._await_approval(ctx, verdict.approval)
            info["approval"] = {
                "id": final.id,
                "status": final.status,
                "decided_by": final.decided_by,
                "reason": final.decision_reason,
            }
            if final.decided_at is not None:
                # the latency target: from the decision to the call going upstream
                lag = (_now() - final.decided_at).total_seconds() * 1000
                info["approval"]["forwarded_after_ms"] = round(lag, 1)
            if not final.approved:
                why = final.decision_reason or "no reason given"
                text = (f"tether: the call to {name} was not approved ({final.status} by "
                        f"{final.decided_by}: {why}); rule {d.rule}")  # fmt: skip
                return await self._finish(call, name, arguments, started, None, text, info,
                                          held_span)  # fmt: skip
        elif d.outcome == "deny":
            text = f"tether denied {name}: {d.reason} (rule: {d.rule})"
            return await self._finish(call, name, arguments, started, None, text, info)
        elif d.outcome == "rate_limited":
            retry = d.retry_after_s or 1.0
            text = f"tether rate-limited {name}: {d.reason}; retry after {retry:.1f}s"
            return await self._finish(call, name, arguments, started, None, text, info)
        try:
            scripted = await self._fixture(call.run_id, name)
            if scripted is not None:
                # an eval attempt's scripted output: decided like any call, never forwarded
                info["fixture"] = True
                result = scripted
            else:
                result = await self._forward(name, arguments, call, ctx)
        except TetherError as exc:
            return await self._finish(call, name, arguments, started, None, exc.message, info,
                                      held_span)  # fmt: skip
        error = result_text(result) if result.is_error else None
        return await self._finish(call, name, arguments, started, result, error, info, held_span,
                                  taint=d.tags | result_trust(result))  # fmt: skip

    async def _fixture(self, run_id: str | None, name: str) -> types.CallToolResult | None:
        """The output an eval attempt's task scripted for this tool (`fixtures.tools`), if any."""
        if run_id is None:
            return None
        if run_id not in self._fixtures:
            found = await anyio.to_thread.run_sync(evals.run_fixtures, self.engine, run_id)
            if len(self._fixtures) > 10_000:
                self._fixtures.clear()
            self._fixtures[run_id] = (found or {}).get("tools") or {}
        tools = self._fixtures[run_id]
        if name not in tools:
            return None
        server, _, tool = name.partition(".")
        upstream = self.upstreams.get(server)
        known = [t for t in (upstream.tools if upstream else []) if t.name == tool]
        return fixture_result(tools[name], known[0].output_schema if known else None)

    async def _forward(
        self, name: str, arguments: dict[str, Any], call: CallContext, ctx: Any
    ) -> types.CallToolResult:
        server, _, tool = name.partition(".")
        builtin = self.builtins.get(server)
        if builtin is not None and tool:
            headers: Mapping[str, str] = ctx.request.headers if ctx.request else {}
            return await builtin.call(call, headers, tool, arguments)
        upstream = self.upstreams.get(server)
        if upstream is not None and tool:
            if upstream.config_error:
                raise UpstreamError(upstream.config_error)
            return await upstream.call_tool(tool, arguments, timeout_s=CALL_TIMEOUT_S)
        entry = await anyio.to_thread.run_sync(registry.get_tool, self.engine, name)
        if entry is not None and entry.kind == "http" and entry.url:
            return await _call_http_tool(entry.url, arguments)
        raise UpstreamError(f"no upstream serves {name}; tools are named server.tool "
                            "(see `tether tools list`)")  # fmt: skip

    async def _await_approval(
        self, ctx: Any, held: approvals.Approval
    ) -> tuple[approvals.Approval, dict[str, Any]]:
        """Waits for the decision, reporting progress so the client knows it is not stuck.
        Returns the decided hold and its `approval` span (written later, off the fast path)."""
        started = _now()
        current = held
        elapsed = 0.0
        with self.wakers.watch(held.id) as event:
            while current.pending:
                await ctx.session.report_progress(
                    elapsed, None, f"waiting for approval {held.id} of {held.tool}"
                )
                current = await approvals.wait(self.engine, held.id, timeout_s=PROGRESS_EVERY_S,
                                               wake=event)  # fmt: skip
                elapsed = (_now() - started).total_seconds()
        ended = _now()
        error = None if current.approved else f"{current.status}: {current.decision_reason or ''}"
        span = dict(
            kind="approval", name=f"approval {held.tool}", started_at=started, ended_at=ended,
            input={"approval_id": held.id, "tool": held.tool}, output=current.status,
            error=error, now=ended,
            attributes={"tether.approval.id": held.id, "tether.approval.status": current.status,
                        "tether.approval.decided_by": current.decided_by},
        )  # fmt: skip
        return current, span

    async def _finish(
        self,
        call: CallContext,
        name: str,
        arguments: dict[str, Any],
        started: datetime,
        result: types.CallToolResult | None,
        error: str | None,
        info: dict[str, Any],
        held_span: dict[str, Any] | None = None,
        taint: frozenset[str] = frozenset(),
    ) -> types.CallToolResult:
        """Writes the spans (and the run's taint) in one trip to a worker thread."""
        ended = _now()
        output = result_text(result) if result is not None else None
        attributes = {"tether.tool.server": name.partition(".")[0], "tether.decision": info}

        def write() -> None:
            if held_span is not None:
                record_span(self.engine, call, redact=self.redact, **held_span)
            record_span(self.engine, call, redact=self.redact, kind="tool", name=name,
                        started_at=started, ended_at=ended, input=arguments, output=output,
                        error=error, attributes=attributes, now=ended)  # fmt: skip
            if taint:
                self.guard.mark_returned(call.run_id, taint, now=ended, agent=call.agent)
            untrusted = UNTRUSTED in taint
            if result is not None and (untrusted or not result.is_error):
                self.guard.record_values(call.run_id, source=name, output=result_payload(result),
                                         untrusted=untrusted, arguments=arguments, now=ended,
                                         agent=call.agent)  # fmt: skip

        await anyio.to_thread.run_sync(write)
        if result is not None:
            return result
        return error_result(error or "tether refused the call", **info)


async def _call_http_tool(url: str, arguments: dict[str, Any]) -> types.CallToolResult:
    """A registered HTTP tool: POST the arguments as JSON, the response body is the result."""
    try:
        async with httpx.AsyncClient(timeout=CALL_TIMEOUT_S) as client:
            response = await client.post(url, json=arguments)
    except httpx.HTTPError as exc:
        raise UpstreamError(f"HTTP tool at {httpx.URL(url).host} failed: {exc}") from None
    text = response.text if response.text else as_json(None)
    return types.CallToolResult(
        content=[types.TextContent(text=text)], is_error=response.status_code >= 400
    )
