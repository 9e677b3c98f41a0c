"""MCP resources, resource templates and prompts through /mcp, under the agent's policy: listed
only when a `resources` / `prompts` rule allows them, every read decided and audited, recorded
as a `retrieval` span, and counted as untrusted input (run taint and value provenance).
Names: resources "server:uri" (templates "server:uri-template"), prompts "server.name".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from sqlalchemy import Engine

from tether.core.errors import UpstreamError
from tether.core.policy import decide_surface
from tether.gateway.mcp.guard import Guard
from tether.gateway.mcp.spans import CallContext, record_span
from tether.gateway.mcp.upstream import Upstream
from tether.store import policies

log = logging.getLogger("tether.mcp")

LIST_TIMEOUT_S = 10.0
Surface = Literal["resources", "prompts"]


def _now() -> datetime:
    return datetime.now(UTC)


class Surfaces:
    """The resources and prompts handlers of the gateway's MCP server."""

    def __init__(
        self,
        engine: Engine,
        guard: Guard,
        upstreams: dict[str, Upstream],
        call_context: Callable[[Any], CallContext],
        redact: tuple[str, ...],
    ) -> None:
        self.engine = engine
        self.guard = guard
        self.upstreams = upstreams
        self.call_context = call_context
        self.redact = redact

    def _upstream_for(self, namespaced: str, sep: str) -> tuple[Upstream, str]:
        server, _, rest = namespaced.partition(sep)
        upstream = self.upstreams.get(server)
        if upstream is None or not rest or not upstream.serving:
            raise MCPError(code=INVALID_PARAMS, message=f"unknown {namespaced!r}: tether names "
                           f"resources SERVER:URI and prompts SERVER.NAME")  # fmt: skip
        return upstream, rest

    async def _visible(self, call: CallContext, surface: Surface, names: list[str]) -> set[str]:
        def run() -> set[str]:
            policy = policies.get(self.engine, call.agent) if call.agent else None
            return {
                n
                for n in names
                if decide_surface(policy, call.agent or "", surface, n).outcome == "allow"
            }

        return await anyio.to_thread.run_sync(run)

    async def _listing(self, capability: str, fetch: Callable[[Upstream], Any]) -> list[Any]:
        out: list[Any] = []
        for up in self.upstreams.values():
            if up.supports(capability):
                try:
                    out.extend((up, item) for item in await fetch(up))
                except UpstreamError as exc:  # one server down contributes nothing
                    log.info("skipping an upstream listing: %s", exc.message)
        return out

    async def list_resources(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        call = self.call_context(ctx)
        found = await self._listing(
            "resources", lambda up: up.list_resources(timeout_s=LIST_TIMEOUT_S)
        )
        items = [r.model_copy(update={"uri": f"{up.name}:{r.uri}", "name": f"{up.name}.{r.name}"})
                 for up, r in found]  # fmt: skip
        allowed = await self._visible(call, "resources", [str(r.uri) for r in items])
        return types.ListResourcesResult(resources=[r for r in items if str(r.uri) in allowed])

    async def list_resource_templates(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        call = self.call_context(ctx)
        found = await self._listing(
            "resources", lambda up: up.list_resource_templates(timeout_s=LIST_TIMEOUT_S)
        )
        items = [
            t.model_copy(
                update={
                    "uri_template": f"{up.name}:{t.uri_template}",
                    "name": f"{up.name}.{t.name}",
                }
            )
            for up, t in found
        ]
        allowed = await self._visible(call, "resources", [t.uri_template for t in items])
        return types.ListResourceTemplatesResult(
            resource_templates=[t for t in items if t.uri_template in allowed]
        )

    async def read_resource(
        self, ctx: Any, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        call = self.call_context(ctx)
        name = str(params.uri)
        upstream, uri = self._upstream_for(name, ":")
        result = await self._governed(call, "resources", name, lambda: upstream.read_resource(
            uri, timeout_s=LIST_TIMEOUT_S))  # fmt: skip
        contents = [c.model_copy(update={"uri": f"{upstream.name}:{c.uri}"})
                    for c in result.contents]  # fmt: skip
        return types.ReadResourceResult(contents=contents)

    async def list_prompts(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        call = self.call_context(ctx)
        found = await self._listing("prompts", lambda up: up.list_prompts(timeout_s=LIST_TIMEOUT_S))
        items = [p.model_copy(update={"name": f"{up.name}.{p.name}"}) for up, p in found]
        allowed = await self._visible(call, "prompts", [p.name for p in items])
        return types.ListPromptsResult(prompts=[p for p in items if p.name in allowed])

    async def get_prompt(
        self, ctx: Any, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        call = self.call_context(ctx)
        upstream, name = self._upstream_for(params.name, ".")
        result = await self._governed(
            call,
            "prompts",
            params.name,
            lambda: upstream.get_prompt(name, params.arguments, timeout_s=LIST_TIMEOUT_S),
            arguments=params.arguments,
        )
        return types.GetPromptResult(description=result.description, messages=result.messages)

    async def _governed(
        self,
        call: CallContext,
        surface: Surface,
        name: str,
        fetch: Callable[[], Any],
        arguments: dict[str, str] | None = None,
    ) -> Any:
        """Decide, fetch, record the span, taint the run and index its values (untrusted)."""
        started = _now()
        decision = await anyio.to_thread.run_sync(lambda: self.guard.check_surface(
            agent=call.agent, run_id=call.run_id, surface=surface, name=name, now=started,
            actor=call.actor))  # fmt: skip
        result, error = None, None
        if decision.outcome != "allow":
            error = f"tether denied {name}: {decision.reason} (rule: {decision.rule})"
        else:
            try:
                result = await fetch()
            except UpstreamError as exc:
                error = exc.message
        ended = _now()
        payload = _payload(result) if result is not None else None
        attributes = {"tether.tool.server": name.partition(":" if surface == "resources"
                                                           else ".")[0],
                      "tether.mcp.surface": surface,
                      "tether.decision": decision.to_dict()}  # fmt: skip

        def write() -> None:
            record_span(self.engine, call, kind="retrieval", name=name, started_at=started,
                        ended_at=ended, input={"name": name, "arguments": arguments},
                        output="\n".join(str(p) for p in payload or []) or None, error=error,
                        attributes=attributes, now=ended, redact=self.redact)  # fmt: skip
            if result is not None:
                self.guard.mark_returned(call.run_id, decision.tags, now=ended, agent=call.agent)
                self.guard.record_values(call.run_id, source=name, output=payload,
                                         untrusted=True, arguments=None, now=ended,
                                         agent=call.agent)  # fmt: skip

        await anyio.to_thread.run_sync(write)
        if error is not None:
            raise MCPError(code=INVALID_PARAMS, message=error)
        return result


def _payload(result: Any) -> list[Any]:
    """The text a resource read or prompt brings into the run."""
    out: list[Any] = []
    for c in getattr(result, "contents", None) or []:
        text = getattr(c, "text", None)
        if text:
            out.append(text)
    for m in getattr(result, "messages", None) or []:
        text = getattr(m.content, "text", None)
        if text:
            out.append(text)
    return out
