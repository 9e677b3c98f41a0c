"""tether for AutoGen (autogen-agentchat / autogen-core 0.7): AutoGen's own OpenTelemetry spans
(invoke_agent, create_agent, execute_tool) and its event log (tool arguments and results; LLM
calls when the model is not behind tether's gateway) become spans of one tether run.

    tracer = TetherAutoGen("support", version="v1")          # once per process
    with tracer.run(task_id="T-1", user="alice") as run:
        client = OpenAIChatCompletionClient(model="gpt-4o-mini", base_url=f"{TETHER_URL}/llm/v1",
                                            api_key=AGENT_KEY, default_headers=run.headers())
        await AssistantAgent("support", model_client=client, tools=[...]).run(task="...")

AutoGen traces through the global tracer provider; `TetherAutoGen` adds a span processor to it
(installing a plain SDK provider when none is set) that takes the spans started inside a
`run()`, stamps the run's id and attribution on them and hands them to tether's exporter
alone; spans outside a run are left to whatever else the provider exports to, and no other
exporter is added. `run.run_id` is the correlation id the gateway's LLM and MCP spans share,
so they land in the same run, counted once. The run is the context (a context variable and the
current OpenTelemetry span), so concurrent runs in tasks or threads keep apart.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode

from tether.integrations._spans import SpanTree
from tether.integrations._wire import view
from tether.sdk import _values as v
from tether.sdk._config import active, flush

try:
    from autogen_core import EVENT_LOGGER_NAME

    _MISSING: str | None = None
except ImportError as exc:  # AutoGen lives in the agent's environment, not tether's
    EVENT_LOGGER_NAME = "autogen_core.events"
    _MISSING = f"tether.integrations.autogen needs AutoGen: pip install 'tether[autogen]' ({exc})"

log = logging.getLogger("tether.integrations")
OPERATION = "gen_ai.operation.name"


class AutoGenRun:
    """One tether run of AutoGen agents: `run_id`, `headers()` for the model client, and
    `output` (set it to the result: it becomes the run's output)."""

    def __init__(self, tree: SpanTree) -> None:
        self.tree = tree
        self.output: Any = None
        self.held: dict[int, ReadableSpan] = {}  # tool spans waiting for their ToolCall event
        self.lock = threading.Lock()

    @property
    def run_id(self) -> str:
        return self.tree.run_id

    def headers(self) -> dict[str, str]:
        return self.tree.headers()


_current: contextvars.ContextVar[AutoGenRun | None] = contextvars.ContextVar(
    "tether_autogen_run", default=None
)
# the tool span that just ended in this task; AutoGen logs the call's ToolCall event next
_last_tool: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "tether_autogen_tool", default=None
)


class TetherAutoGen:
    """AutoGen spans and events -> tether spans, one tether run per `run()`."""

    _installed: _RunSpans | None = None
    _install_lock = threading.Lock()

    def __init__(
        self,
        agent: str,
        *,
        version: str | None = None,
        llm_via_gateway: bool = True,
        tools_via_gateway: bool = False,
    ) -> None:
        if _MISSING is not None:
            raise ImportError(_MISSING)
        self.agent = agent
        self.version = version
        self.llm_via_gateway = llm_via_gateway
        self.tools_via_gateway = tools_via_gateway
        _install()

    @contextmanager
    def run(
        self, *, task_id: str | None = None, user: str | None = None, run_id: str | None = None
    ) -> Iterator[AutoGenRun]:
        """AutoGen work inside the block (`await agent.run(...)`, a team) is one tether run."""
        run = AutoGenRun(SpanTree(
            self.agent, task_id=task_id, user=user, version=self.version, run_id=run_id,
            llm_via_gateway=self.llm_via_gateway, tools_via_gateway=self.tools_via_gateway,
        ))  # fmt: skip
        root = run.tree.root()
        token = _current.set(run)
        attached = otel_context.attach(trace.set_span_in_context(root))
        error: BaseException | None = None
        try:
            yield run
        except BaseException as exc:
            error = exc
            raise
        finally:
            otel_context.detach(attached)
            _current.reset(token)
            with run.lock:
                left, run.held = list(run.held.values()), {}
            for span in left:  # tools whose ToolCall event never came (logging turned off)
                _export(span)
            out = getattr(run.output, "messages", None)  # a TaskResult: its last message
            output = getattr(out[-1], "content", out[-1]) if out else run.output
            run.tree.finish(output=view(output) if output is not None else None, error=error)
            flush(5.0)


class _RunSpans(SpanProcessor):
    """On the global provider: spans started inside a tether run go to tether's exporter."""

    def __init__(self) -> None:
        self.mine: dict[int, AutoGenRun] = {}
        self.lock = threading.Lock()

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        run = _current.get()
        scope = span.instrumentation_scope
        if run is None or (scope is not None and scope.name == "tether.sdk"):
            return  # not in a run, or tether's own span (the SDK's provider made global)
        tree = run.tree
        attrs = {v.RUN_ID: tree.run_id, **tree._attribution()}
        tool = (span.attributes or {}).get(OPERATION) == "execute_tool"
        if tool and tree.tools_via_gateway:  # the MCP gateway's span of the call is the run's
            attrs["tether.span.kind"] = "chain"
            span.update_name(f"tool {(span.attributes or {}).get('gen_ai.tool.name')}")
        span.set_attributes(attrs)
        with self.lock:
            self.mine[span.context.span_id] = run

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None:
            return
        with self.lock:
            run = self.mine.pop(span.context.span_id, None)
        if run is None:
            return
        tool = (span.attributes or {}).get(OPERATION) == "execute_tool"
        if tool and span.status.status_code != StatusCode.ERROR:
            with run.lock:
                run.held[span.context.span_id] = span
            _last_tool.set(span.context.span_id)
            return
        _export(span)


class _Events(logging.Handler):
    """AutoGen's event log: a ToolCall completes the tool span that just ended; an LLMCall is
    an LLM span when the model is not behind tether's gateway."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            run = _current.get()
            kwargs = getattr(record.msg, "kwargs", None)
            if run is None or not isinstance(kwargs, dict):
                return
            if kwargs.get("type") == "ToolCall":
                self._tool(run, kwargs)
            elif kwargs.get("type") == "LLMCall" and not run.tree.llm_via_gateway:
                self._llm(run, kwargs)
        except Exception:  # a tracing failure must never break the agent
            log.warning("tether: could not trace this event", exc_info=True)

    def _tool(self, run: AutoGenRun, kwargs: dict[str, Any]) -> None:
        span_id = _last_tool.get()
        with run.lock:
            span = run.held.pop(span_id, None) if span_id is not None else None
        if span is None:
            return
        _last_tool.set(None)
        extra = {}
        for key, mime, value in ((v.INPUT, v.INPUT_MIME, kwargs.get("arguments")),
                                 (v.OUTPUT, v.OUTPUT_MIME, kwargs.get("result"))):  # fmt: skip
            extra[key], extra[mime] = v.to_text(view(value))
        _export(_with_attributes(span, extra))

    def _llm(self, run: AutoGenRun, kwargs: dict[str, Any]) -> None:
        response = kwargs.get("response") or {}
        model = response.get("model") if isinstance(response, dict) else None
        key = ("llm", time.monotonic_ns())
        run.tree.start(key, None, f"llm {model or ''}".strip(), "llm",
                       input=view(kwargs.get("messages")),
                       attributes={v.REQUEST_MODEL: model, v.OPERATION: "chat"})  # fmt: skip
        run.tree.end(key, output=view(response), attributes={
            v.INPUT_TOKENS: kwargs.get("prompt_tokens"),
            v.OUTPUT_TOKENS: kwargs.get("completion_tokens")})  # fmt: skip


def _install() -> None:
    """Once per process: the span processor on the global provider, the event log handler."""
    with TetherAutoGen._install_lock:
        if TetherAutoGen._installed is not None:
            return
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):  # nothing set yet: the API's proxy
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        spans = _RunSpans()
        provider.add_span_processor(spans)
        events = logging.getLogger(EVENT_LOGGER_NAME)
        events.addHandler(_Events(logging.INFO))
        if events.getEffectiveLevel() > logging.INFO:
            events.setLevel(logging.INFO)  # AutoGen logs its events at INFO
        TetherAutoGen._installed = spans


def _export(span: ReadableSpan) -> None:
    processor = active().processor
    if processor is not None:
        processor.on_end(span)


def _with_attributes(span: ReadableSpan, extra: dict[str, Any]) -> ReadableSpan:
    return ReadableSpan(
        name=span.name, context=span.context, parent=span.parent, resource=span.resource,
        attributes={**(span.attributes or {}), **extra}, events=span.events, links=span.links,
        kind=span.kind, status=span.status, start_time=span.start_time, end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )  # fmt: skip
