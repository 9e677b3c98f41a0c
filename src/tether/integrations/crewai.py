"""tether for CrewAI: an event listener on CrewAI's event bus that makes each crew run one tether
run (crew, task, agent, tool and MCP tool spans; LLM calls too when the model is not behind
tether's gateway).

    listener = TetherCrewListener("collections-crew", version="v1")   # once per process
    with listener.run(task_id="INV-1042", user="alice") as run:
        llm = LLM(model="openai/gpt-4o-mini", base_url=f"{TETHER_URL}/llm/v1",
                  api_key=AGENT_KEY, default_headers=run.headers())
        Crew(agents=[Agent(..., llm=llm)], tasks=[...]).kickoff()

`run.run_id` is the correlation id: the gateway's LLM (and MCP) spans carry it, so they and the
crew's spans land in one run, counted once. The run is the context (a context variable), so
crews kicked off concurrently in threads or tasks keep apart; a kickoff outside `run()` is a run
of its own. CrewAI's own telemetry and trace upload are switched off: nothing leaves for a
vendor endpoint. CrewAI is the agent's dependency (`pip install 'tether[crewai]'`).
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tether.integrations._spans import SpanTree
from tether.integrations._wire import view
from tether.sdk import _values as v
from tether.sdk._config import flush

try:
    from crewai.events import BaseEventListener, crewai_event_bus
    from crewai.events.types import (
        agent_events,
        crew_events,
        llm_events,
        mcp_events,
        task_events,
        tool_usage_events,
    )

    _EVENT_MODULES = (
        crew_events, task_events, agent_events, tool_usage_events, mcp_events, llm_events
    )  # fmt: skip
    _MISSING: str | None = None
except ImportError as exc:  # CrewAI lives in the agent's environment, not tether's
    BaseEventListener = object
    _EVENT_MODULES: tuple[Any, ...] = ()  # type: ignore[no-redef]
    _MISSING = f"tether.integrations.crewai needs CrewAI: pip install 'tether[crewai]' ({exc})"

log = logging.getLogger("tether.integrations")

# event type -> (what it does to a span, tether kind); "crew" opens the run's root
_STARTS = {
    "crew_kickoff_started": "crew",
    "task_started": "chain",
    "agent_execution_started": "agent",
    "tool_usage_started": "tool",
    "mcp_tool_execution_started": "tool",
    "llm_call_started": "llm",
}
_ENDS = {
    "crew_kickoff_completed", "crew_kickoff_failed", "task_completed", "task_failed",
    "agent_execution_completed", "agent_execution_error", "tool_usage_finished",
    "tool_usage_error", "mcp_tool_execution_completed", "mcp_tool_execution_failed",
    "llm_call_completed", "llm_call_failed",
}  # fmt: skip


def _quiet_crewai() -> None:
    # CrewAI's anonymous telemetry and its trace upload would send the run to CrewAI's servers;
    # tether is where the traces go. Set before CrewAI builds its telemetry (first Crew).
    os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("CREWAI_DISABLE_TRACKING", "true")
    os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
    os.environ.setdefault("CREWAI_DISABLE_VERSION_CHECK", "true")


def _ns(event: Any) -> int | None:
    stamp = getattr(event, "timestamp", None)
    return int(stamp.timestamp() * 1e9) if stamp is not None else None


class CrewRun:
    """One tether run of crews: `run_id`, `headers()` for the model client, the SpanTree."""

    def __init__(self, tree: SpanTree) -> None:
        self.tree = tree
        self.output: Any = None
        self.crew_event: str | None = None  # the kickoff that opened the root
        self.crew_id: str | None = None  # and its crew
        # ("agent" | "task", CrewAI id) -> the event id of its span
        self.scopes: dict[tuple[str, str | None], str] = {}

    @property
    def run_id(self) -> str:
        return self.tree.run_id

    def headers(self) -> dict[str, str]:
        return self.tree.headers()


class TetherCrewListener(BaseEventListener):  # type: ignore[misc]
    """CrewAI events -> tether spans, one tether run per `run()` (see the module docstring)."""

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
        _quiet_crewai()
        self.agent = agent
        self.version = version
        self.llm_via_gateway = llm_via_gateway
        self.tools_via_gateway = tools_via_gateway
        self._current: contextvars.ContextVar[CrewRun | None] = contextvars.ContextVar(
            f"tether_crew_run_{id(self)}", default=None
        )
        # CrewAI ids (kickoff event, crew, agents, tasks) -> run, for events delivered outside
        # the run's context and for kickoffs outside `run()`
        self._by_id: dict[str, CrewRun] = {}
        self._lock = threading.Lock()
        super().__init__()

    def new_run(
        self, *, task_id: str | None = None, user: str | None = None, run_id: str | None = None
    ) -> CrewRun:
        return CrewRun(SpanTree(
            self.agent, task_id=task_id, user=user, version=self.version, run_id=run_id,
            llm_via_gateway=self.llm_via_gateway, tools_via_gateway=self.tools_via_gateway,
        ))  # fmt: skip

    @contextmanager
    def run(
        self, *, task_id: str | None = None, user: str | None = None, run_id: str | None = None
    ) -> Iterator[CrewRun]:
        """The crews kicked off inside are one tether run; it ends when the block does."""
        crew_run = self.new_run(task_id=task_id, user=user, run_id=run_id)
        token = self._current.set(crew_run)
        error: BaseException | None = None
        try:
            yield crew_run
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._current.reset(token)
            crewai_event_bus.flush(30.0)  # CrewAI delivers events on its own threads
            self._finish(crew_run, output=crew_run.output, error=error)

    def _finish(self, crew_run: CrewRun, *, output: Any, error: Any, end: int | None = None
                ) -> None:  # fmt: skip
        with self._lock:
            self._by_id = {k: r for k, r in self._by_id.items() if r is not crew_run}

        crew_run.tree.finish(output=output, error=error, end_time=end)
        flush(5.0)

    # ------------------------------------------------------------------ CrewAI's bus

    def setup_listeners(self, crewai_event_bus: Any) -> None:
        for module in _EVENT_MODULES:
            for cls in vars(module).values():
                kind = getattr(cls, "model_fields", {}).get("type")
                typ = getattr(kind, "default", None)
                if isinstance(cls, type) and (typ in _STARTS or typ in _ENDS):
                    crewai_event_bus.on(cls)(self._on_event)

    def _on_event(self, source: Any, event: Any) -> None:
        try:
            crew_run = self._run_of(source, event)
            if crew_run is None:
                return
            if event.type in _STARTS:
                self._start(crew_run, source, event)
            else:
                self._end(crew_run, source, event)
        except Exception:  # a tracing failure must never break the crew
            log.warning("tether: could not trace this event", exc_info=True)

    def _run_of(self, source: Any, event: Any) -> CrewRun | None:
        found = self._current.get()
        ids = [event.parent_event_id, event.started_event_id, event.agent_id, event.task_id]
        ids += [str(getattr(getattr(event, attr, None), "id", "")) for attr in ("agent", "task")]
        if event.type == "crew_kickoff_started":
            crew = getattr(event, "crew", None) or source
            if found is None:  # a kickoff outside run(): a run of its own
                found = self.new_run()
            with self._lock:
                for key in _crew_ids(crew, event.event_id):
                    self._by_id[key] = found
            return found
        if found is not None:
            return found
        with self._lock:
            return next((self._by_id[k] for k in ids if k and k in self._by_id), None)

    def _start(self, crew_run: CrewRun, source: Any, event: Any) -> None:
        tree, kind, at = crew_run.tree, _STARTS[event.type], _ns(event)
        if kind == "crew" and crew_run.crew_event is None:
            crew_run.crew_event = event.event_id
            crew_run.crew_id = str(getattr(getattr(event, "crew", None) or source, "id", ""))
            tree.root(input=view(getattr(event, "inputs", None)), start_time=at)
            return
        name, attrs, payload = _describe(source, event)
        parent = self._parent(crew_run, event)
        tree.start(event.event_id, parent, name, "chain" if kind == "crew" else kind,
                   input=payload, attributes=attrs, start_time=at)  # fmt: skip
        agent = getattr(event, "agent", None)
        scope = (
            ("agent", str(agent.id)) if kind == "agent" and agent is not None
            else ("task", event.task_id) if event.type == "task_started" else None
        )  # fmt: skip
        if scope is not None:
            crew_run.scopes[scope] = event.event_id  # LLM and tool events name them by id
        with self._lock:  # events under this one (and its end) find the run by its id
            self._by_id[event.event_id] = crew_run
            if scope is not None:
                self._by_id.setdefault(str(scope[1]), crew_run)

    def _parent(self, crew_run: CrewRun, event: Any) -> Any:
        """The span to hang `event` under: its parent event's span, else its agent's or task's
        (CrewAI's executor scopes have no span of their own), else the root."""
        tree = crew_run.tree
        parent = event.parent_event_id
        if parent and parent != crew_run.crew_event and tree.is_open(parent):
            return parent
        for key in (("agent", event.agent_id), ("task", event.task_id)):
            span_key = crew_run.scopes.get(key)
            if span_key is not None and tree.is_open(span_key):
                return span_key
        return None

    def _end(self, crew_run: CrewRun, source: Any, event: Any) -> None:
        at, typ = _ns(event), event.type
        error = getattr(event, "error", None) if typ.endswith(("_failed", "_error")) else None
        output: Any = getattr(event, "output", None)
        crew = getattr(event, "crew", None) or source
        # by the crew, not the scope: on a failure CrewAI pairs the end with an inner start
        if typ.startswith("crew_kickoff") and str(getattr(crew, "id", "")) == crew_run.crew_id:
            crew_run.output = view(getattr(output, "raw", output))
            if self._current.get() is not crew_run:  # a kickoff outside run() ends its run
                self._finish(crew_run, output=crew_run.output, error=error, end=at)
            return
        attrs: dict[str, Any] = {}
        if typ == "llm_call_completed":
            usage = event.usage or {}
            attrs = {v.INPUT_TOKENS: usage.get("prompt_tokens"),
                     v.OUTPUT_TOKENS: usage.get("completion_tokens")}  # fmt: skip
            output = event.response
        elif typ == "mcp_tool_execution_completed":
            output = event.result
        elif typ == "task_completed":
            output = getattr(output, "raw", output)
        crew_run.tree.end(self._started(crew_run, event), output=view(output) if output is not None
                          else None, error=str(error) if error else None, attributes=attrs,
                          end_time=at, early=True)  # fmt: skip

    def _started(self, crew_run: CrewRun, event: Any) -> Any:
        """The span an end event closes: its agent's or task's open span when it ends one
        (CrewAI pairs the ends of a failing crew with the wrong starts), else its start's."""
        key, tree = event.started_event_id, crew_run.tree
        agent = getattr(event, "agent", None)
        scope = (
            ("agent", str(agent.id)) if event.type.startswith("agent_execution") and agent
            else ("task", event.task_id) if event.type.startswith("task_") else None
        )  # fmt: skip
        alt = crew_run.scopes.get(scope) if scope is not None else None
        return alt if alt is not None and tree.is_open(alt) else key


def _crew_ids(crew: Any, event_id: str) -> list[str]:
    ids = [event_id, str(getattr(crew, "id", ""))]
    ids += [str(a.id) for a in getattr(crew, "agents", None) or [] if getattr(a, "id", None)]
    ids += [str(t.id) for t in getattr(crew, "tasks", None) or [] if getattr(t, "id", None)]
    return [i for i in ids if i]


def _describe(source: Any, event: Any) -> tuple[str, dict[str, Any], Any]:
    """(span name, attributes, input) of a start event."""
    typ = event.type
    if typ == "crew_kickoff_started":
        return f"crew {event.crew_name or ''}".strip(), {}, view(event.inputs)
    if typ == "task_started":
        task = getattr(event, "task", None) or source
        name = getattr(task, "name", None) or str(getattr(task, "description", "task"))[:80]
        return f"task {name}", {"crewai.task.id": event.task_id}, event.context
    if typ == "agent_execution_started":
        role = getattr(event.agent, "role", "agent")
        return role, {"gen_ai.agent.name": role, "crewai.agent.id": str(event.agent.id)}, (
            event.task_prompt)  # fmt: skip
    if typ in ("tool_usage_started", "mcp_tool_execution_started"):
        attrs = {v.TOOL_NAME: event.tool_name, "crewai.agent.role": event.agent_role}
        if typ.startswith("mcp"):
            attrs["tether.mcp.server"] = event.server_name
        return event.tool_name, attrs, view(event.tool_args)
    model = getattr(event, "model", None)
    return f"llm {model or ''}".strip(), {v.REQUEST_MODEL: model, v.OPERATION: "chat"}, view(
        event.messages)  # fmt: skip
