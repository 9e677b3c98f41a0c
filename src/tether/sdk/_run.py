"""`tether.run(...)`: one agent run as the root AGENT span of a trace, its output and outcome, and
the feedback and scores people and evals attach to it afterwards."""

from __future__ import annotations

import contextvars
import logging
import time
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, format_trace_id

from tether.sdk import _values as v
from tether.sdk._attribution import Attributed
from tether.sdk._attribution import current as _current
from tether.sdk._config import Sdk, active

log = logging.getLogger("tether.sdk")


def current_run() -> Run | None:
    """The run the calling code is inside, or None."""
    run = _current.get()
    return run if isinstance(run, Run) else None


class Run:
    """A running (or finished) agent run. Use as `with` or `async with`:

    with tether.run(agent="triage", task_id="T-1", user="alice", version="v3") as run:
        run.set_output(answer)
    run.feedback(thumbs=1)
    """

    def __init__(
        self,
        agent: str,
        *,
        task_id: str | None = None,
        user: str | None = None,
        version: str | None = None,
        input: Any = None,
        run_id: str | None = None,
        name: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self.agent = agent
        self.task_id = task_id
        self.user = user
        self.version = version
        self.input = input
        self.output: Any = None
        self.error: str | None = None
        self.status = "pending"
        self._run_id = run_id
        self._name = name or agent
        self._attributes = attributes or {}
        self._span: Span | None = None
        self._sdk: Sdk | None = None
        self._tokens: tuple[object, contextvars.Token[Attributed | None]] | None = None
        self._pending: list[tuple[str, dict[str, Any]]] = []
        # tether has this run's input (sent with its first governed call; spans come at the end)
        self.declared = False
        # tool results reported for value provenance, and those tether acknowledged (each
        # counter written by one thread: the agent's, the SDK's REST thread)
        self.values_reported = 0
        self.values_delivered = 0

    # ------------------------------------------------------------------ identity

    @property
    def trace_id(self) -> str:
        if self._span is None:
            raise RuntimeError("the run has not started: use `with tether.run(...) as run:`")
        return format_trace_id(self._span.get_span_context().trace_id)

    @property
    def id(self) -> str:
        """`run_` + the trace id (what tether stores), unless a run id was given."""
        return self._run_id or f"run_{self.trace_id}"

    @property
    def span(self) -> Span | None:
        return self._span

    def declaration(self) -> dict[str, Any] | None:
        """The run's input and attribution for tether (`run` of /api/v1/decide and
        /api/v1/runs/{id}/values), until tether has them; None when there is nothing to say."""
        if self.declared:
            return None
        out = v.clean({"task_id": self.task_id, "user": self.user, "version": self.version})
        if self.input is not None:
            out["input"] = self.input if isinstance(self.input, str) else v.to_jsonable(self.input)
        return out or None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Run:
        self._sdk = sdk = active()
        parent = current_run()
        attrs = v.clean(
            {
                v.SPAN_KIND: "AGENT",
                v.AGENT: self.agent,
                v.AGENT_VERSION: self.version,
                v.TASK_ID: self.task_id,
                v.USER: self.user,
                v.RUN_ID: self._run_id,
                v.PARENT_RUN_ID: parent.id if parent is not None else None,
                **self._attributes,
            }
        )
        # A run is always the root of its own trace, even when started inside another run.
        span = sdk.tracer.start_span(self._name, context=otel_context.Context(), attributes=attrs)
        v.set_io(span, v.INPUT, v.INPUT_MIME, self.input)
        self._span = span
        self.status = "running"
        ctx_token = otel_context.attach(trace.set_span_in_context(span))
        self._tokens = (ctx_token, _current.set(self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        assert span is not None and self._tokens is not None
        if exc is not None:
            self.status = "failed"
            self.error = v.error_text(exc)
            v.mark_error(span, exc)
        else:
            self.status = "succeeded"
            span.set_status(Status(StatusCode.OK))
        span.end()
        ctx_token, run_token = self._tokens
        self._tokens = None
        _current.reset(run_token)
        otel_context.detach(ctx_token)  # type: ignore[arg-type]
        pending, self._pending = self._pending, []
        for path, body in pending:
            self._send(path, body)

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # ------------------------------------------------------------------ results

    def set_output(self, output: Any) -> None:
        """Records the run's final output (text as is, anything else as JSON)."""
        self.output = output
        if self._span is not None and self._span.is_recording():
            v.set_io(self._span, v.OUTPUT, v.OUTPUT_MIME, output)

    def set_attribute(self, key: str, value: Any) -> None:
        if self._span is not None and self._span.is_recording():
            self._span.set_attributes(v.clean({key: value}))

    def feedback(
        self,
        *,
        thumbs: int | None = None,
        score: float | None = None,
        comment: str | None = None,
        user: str | None = None,
    ) -> None:
        """Human feedback on this run: thumbs up (1) / down (-1), a score, a comment. Sent in the
        background (after the run's spans are exported); never raises once arguments are valid.
        """
        if thumbs not in (None, 1, -1):
            raise ValueError("thumbs must be 1 (up) or -1 (down)")
        if thumbs is None and score is None and not comment:
            raise ValueError("feedback needs thumbs, score or comment")
        who = user or self.user
        bodies: list[dict[str, Any]] = []
        if thumbs is not None:
            bodies.append({"kind": "thumbs", "value": thumbs})
        if score is not None:
            bodies.append({"kind": "score", "value": float(score)})
        if not bodies:
            bodies.append({"kind": "comment"})
        if comment:
            bodies[0]["comment"] = comment
        for body in bodies:
            self._queue("feedback", {**body, "user": who} if who else body)

    def score(self, name: str, value: float, comment: str | None = None) -> None:
        """A named score (an eval's result, a quality metric) on this run; sent in the background.

        run.score("correctness", 0.9, comment="matched the reference")
        """
        body: dict[str, Any] = {"name": name, "value": float(value), "source": "sdk"}
        if comment:
            body["comment"] = comment
        self._queue("scores", body)

    def _queue(self, path: str, body: dict[str, Any]) -> None:
        if self._span is None:
            raise RuntimeError("the run has not started: use `with tether.run(...) as run:`")
        if self._tokens is not None:  # still running: the run is not stored yet; send at the end
            self._pending.append((path, body))
        else:
            self._send(path, body)

    def _send(self, path: str, body: dict[str, Any]) -> None:
        sdk = self._sdk or active()
        run_id = self.id
        sdk.http.submit(lambda: _post_when_stored(sdk, run_id, path, body))

    def __repr__(self) -> str:
        rid = self.id if self._span is not None else "(not started)"
        return f"<tether.Run {rid} agent={self.agent!r} status={self.status}>"


def _post_when_stored(sdk: Sdk, run_id: str, path: str, body: dict[str, Any]) -> None:
    """POSTs to /api/v1/runs/{id}/{path}, first flushing spans so the run exists; retries a 404
    briefly because a batch may still be on its way."""
    sdk.flush_spans(sdk.http.timeout_s)
    url = f"/api/v1/runs/{run_id}/{path}"
    for attempt in range(5):
        resp = sdk.http.request("POST", url, json=body)
        if resp.status_code == 404 and attempt < 4:
            time.sleep(0.2 * 2**attempt)
            continue
        if resp.status_code >= 300:
            sdk.http.failed_jobs += 1
            log.warning("tether: %s answered %s: %s", url, resp.status_code, resp.text[:200])
        return


def run(
    agent: str,
    *,
    task_id: str | None = None,
    user: str | None = None,
    version: str | None = None,
    input: Any = None,
    run_id: str | None = None,
    name: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> Run:
    """Starts a run of `agent` (as a context manager, sync or async). An exception inside the
    block marks the run failed with its message and is re-raised.

        with tether.run(agent="triage", task_id="T-1", user="alice", version="v3",
                        input=ticket) as run:
            run.set_output(handle(ticket))
    """
    return Run(
        agent,
        task_id=task_id,
        user=user,
        version=version,
        input=input,
        run_id=run_id,
        name=name,
        attributes=attributes,
    )
