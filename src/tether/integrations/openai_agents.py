"""tether for the OpenAI Agents SDK: a `TracingProcessor` that turns each Agents trace into one
tether run (agent, function, handoff, guardrail and MCP spans; generations too when the model
is not behind tether's gateway), and `needs_approval` for function tools decided by the agent's
tether policy (`/api/v1/decide`).

    processor = TetherTracingProcessor(agent="support")
    agents.set_trace_processors([processor])    # replaces the vendor exporter: nothing leaves
    config = processor.run_config(task_id="T-1", user="alice")
    await Runner.run(agent, "Where is my refund?", run_config=config)

`run_config` names the run up front (the trace id is the correlation id) and sends it to the
gateway as `X-Tether-Run-Id`, so the gateway's LLM spans and these land in one run.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import httpx
from agents import ModelSettings, RunConfig
from agents.tracing import Span, Trace, TracingProcessor

from tether.integrations._spans import SpanTree
from tether.integrations._wire import view
from tether.sdk import _values as v
from tether.sdk._config import active, flush


class TetherTracingProcessor(TracingProcessor):
    """Agents traces -> tether runs, one SpanTree per trace (concurrent runs stay apart)."""

    def __init__(
        self, agent: str, *, version: str | None = None, llm_via_gateway: bool = True
    ) -> None:
        self.agent = agent
        self.version = version
        self.llm_via_gateway = llm_via_gateway
        self._trees: dict[str, SpanTree] = {}
        self._lock = threading.Lock()

    @staticmethod
    def run_id_of(trace_id: str) -> str:
        return "run_" + trace_id.removeprefix("trace_")[:60]

    def run_config(
        self, *, task_id: str | None = None, user: str | None = None,
        workflow_name: str | None = None, **kwargs: Any,
    ) -> RunConfig:  # fmt: skip
        """A RunConfig whose trace is one tether run, its LLM calls attributed to it."""
        trace_id = f"trace_{os.urandom(16).hex()}"
        headers = {"X-Tether-Run-Id": self.run_id_of(trace_id)}
        if task_id:
            headers["X-Tether-Task-Id"] = task_id
        if user:
            headers["X-Tether-User"] = user
        meta = {k: val for k, val in {"task_id": task_id, "user": user}.items() if val}
        return RunConfig(
            workflow_name=workflow_name or self.agent, trace_id=trace_id, trace_metadata=meta,
            model_settings=ModelSettings(extra_headers=headers), **kwargs,
        )  # fmt: skip

    def _tree(self, trace_id: str) -> SpanTree | None:
        with self._lock:
            return self._trees.get(trace_id)

    def on_trace_start(self, trace: Trace) -> None:
        meta = getattr(trace, "metadata", None) or {}
        tree = SpanTree(
            self.agent, task_id=meta.get("task_id"), user=meta.get("user"),
            version=self.version, run_id=self.run_id_of(trace.trace_id),
            llm_via_gateway=self.llm_via_gateway, name=trace.name,
        )  # fmt: skip
        with self._lock:
            self._trees[trace.trace_id] = tree
        tree.root()

    def on_trace_end(self, trace: Trace) -> None:
        with self._lock:
            tree = self._trees.pop(trace.trace_id, None)
        if tree is not None:
            tree.finish()

    def on_span_start(self, span: Span[Any]) -> None:
        tree = self._tree(span.trace_id)
        if tree is None:
            return
        name, kind, attrs = describe(span.span_data)
        tree.start(span.span_id, span.parent_id, name, kind, attributes=attrs)

    def on_span_end(self, span: Span[Any]) -> None:
        tree = self._tree(span.trace_id)
        if tree is None:
            return
        data = span.span_data
        output = getattr(data, "output", None)
        attrs: dict[str, Any] = {}
        usage = getattr(data, "usage", None)
        if isinstance(usage, dict):
            attrs = {v.INPUT_TOKENS: usage.get("input_tokens"),
                     v.OUTPUT_TOKENS: usage.get("output_tokens")}  # fmt: skip
        if getattr(data, "type", "") == "guardrail":
            attrs["tether.guardrail.triggered"] = bool(getattr(data, "triggered", False))
        err = span.error
        message = f"{err.get('message')}: {err.get('data')}" if err else None
        tree.end(span.span_id, output=view(output) if output is not None else None,
                 error=message, attributes=attrs)  # fmt: skip

    def shutdown(self) -> None:
        with self._lock:
            trees, self._trees = list(self._trees.values()), {}
        for tree in trees:
            tree.finish(error="the tracing processor shut down first")
        flush()  # a no-op once tether.shutdown() ran (the Agents SDK calls this at exit)

    def force_flush(self) -> None:
        flush()


def describe(data: Any) -> tuple[str, str, dict[str, Any]]:
    """(span name, tether kind, attributes) for an Agents span's data."""
    kind = getattr(data, "type", "custom")
    if kind == "agent":
        return data.name, "agent", {"gen_ai.agent.name": data.name}
    if kind == "function":
        mcp = getattr(data, "mcp_data", None)
        return data.name, "tool", {v.TOOL_NAME: data.name, v.INPUT: data.input,
                                   "tether.mcp": view(mcp) if mcp else None}  # fmt: skip
    if kind in ("generation", "response"):
        model = getattr(data, "model", None)
        return f"llm {model or ''}".strip(), "llm", {v.REQUEST_MODEL: model}
    if kind == "handoff":
        return f"handoff {data.from_agent} -> {data.to_agent}", "chain", {
            "tether.handoff.from": data.from_agent, "tether.handoff.to": data.to_agent}  # fmt: skip
    if kind == "guardrail":
        return f"guardrail {data.name}", "guardrail", {}
    if kind == "mcp_tools":
        return f"mcp list_tools {data.server}", "chain", {"tether.mcp.server": data.server}
    return str(getattr(data, "name", kind)), "chain", {}


def needs_approval(tool: str, *, tags: tuple[str, ...] = ("irreversible",)) -> Any:
    """A `needs_approval=` callable for an Agents function tool: tether's policy decides.

        @function_tool(needs_approval=needs_approval("mail.send"))
        def send_email(to: str, body: str) -> str: ...

    `approval_required` pauses the Agents run for approval (True); `allow` lets the call run;
    `deny` and `rate_limited` raise, so the call is never made.
    """

    async def decide(ctx: Any, params: dict[str, Any], call_id: str) -> bool:
        sdk = active()
        body = {"tool": tool, "arguments": params, "tags": list(tags)}
        run = getattr(getattr(ctx, "context", None), "tether_run_id", None)
        if run:
            body["run_id"] = run
        try:
            resp = await sdk.http.arequest("POST", "/api/v1/decide", json=body)
        except httpx.HTTPError as exc:
            raise PermissionError(f"tether could not decide on {tool} ({exc}); not run") from None
        out = resp.json() if resp.status_code < 300 else {"decision": "deny", "reason": resp.text}
        if out["decision"] == "allow":
            return False
        if out["decision"] == "approval_required":
            return True
        raise PermissionError(f"tether's policy refused {tool}: {out.get('reason')}")

    return decide
