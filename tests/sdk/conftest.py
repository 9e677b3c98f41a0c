"""A small real HTTP server implementing the part of tether's contract the SDK talks to
(/v1/traces protobuf, feedback, scores, decide, approval wait), and SDK lifecycle fixtures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import tether
from tests.conftest import free_port
from tether.testing import tether_capture  # noqa: F401  (offered to users' conftest.py)


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


@dataclass
class FakeTether:
    """What the fake server received, and how it answers decisions and approval waits."""

    spans: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    decide_requests: list[dict[str, Any]] = field(default_factory=list)
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    values_status: int = 200  # answer this to POST /api/v1/runs/{id}/values
    auth: list[str | None] = field(default_factory=list)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # approval id -> the statuses successive waits return (the last one repeats)
    approvals: dict[str, list[str]] = field(default_factory=dict)
    wait_calls: list[tuple[str, float]] = field(default_factory=list)
    traces_status: int = 200
    max_body: int | None = None  # answer 413 to bigger OTLP requests
    url: str = ""

    def span(self, name: str) -> dict[str, Any]:
        found = [s for s in self.spans if s["name"] == name]
        assert len(found) == 1, (
            f"{len(found)} spans named {name!r}: {[s['name'] for s in self.spans]}"
        )
        return found[0]

    def app(self) -> Starlette:
        async def traces(request: Request) -> Response:
            self.auth.append(request.headers.get("authorization"))
            if self.traces_status != 200:
                return Response(status_code=self.traces_status)
            body = await request.body()
            if self.max_body is not None and len(body) > self.max_body:
                return Response(status_code=413)
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            for rs in req.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append(
                            {
                                "name": s.name,
                                "trace_id": s.trace_id.hex(),
                                "span_id": s.span_id.hex(),
                                "parent_id": s.parent_span_id.hex() or None,
                                "attributes": {a.key: _value(a.value) for a in s.attributes},
                                "status": s.status.code,
                                "error": s.status.message or None,
                                "latency_ms": (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6,
                                "resource": resource,
                            }
                        )
            return Response(b"", media_type="application/x-protobuf")

        async def feedback(request: Request) -> Response:
            run_id = request.path_params["run_id"]
            if not any("run_" + s["trace_id"] == run_id for s in self.spans):
                return JSONResponse({"error": {"type": "not_found"}}, status_code=404)
            target = self.feedback if request.url.path.endswith("/feedback") else self.scores
            target.append({"run_id": run_id, **(await request.json())})
            return JSONResponse({"ok": True}, status_code=201)

        async def decide(request: Request) -> Response:
            body = await request.json()
            self.decide_requests.append(body)
            answer = self.decisions.get(body["tool"], {"decision": "allow"})
            return JSONResponse(answer)

        async def values(request: Request) -> Response:
            body = await request.json()
            self.tool_results.append({"run_id": request.path_params["run_id"], **body})
            if self.values_status != 200:
                return JSONResponse({"error": {"type": "x"}}, status_code=self.values_status)
            return JSONResponse({"run_id": request.path_params["run_id"], "tags": [],
                                 "untrusted": False})  # fmt: skip

        async def wait(request: Request) -> Response:
            approval_id = request.path_params["approval_id"]
            self.wait_calls.append((approval_id, float(request.query_params["timeout_s"])))
            statuses = self.approvals[approval_id]
            status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
            return JSONResponse({"status": status, "reason": f"{status} by test"})

        return Starlette(
            routes=[
                Route("/v1/traces", traces, methods=["POST"]),
                Route("/api/v1/runs/{run_id}/feedback", feedback, methods=["POST"]),
                Route("/api/v1/runs/{run_id}/scores", feedback, methods=["POST"]),
                Route("/api/v1/decide", decide, methods=["POST"]),
                Route("/api/v1/runs/{run_id}/values", values, methods=["POST"]),
                Route("/api/v1/approvals/{approval_id}/wait", wait, methods=["GET"]),
            ]
        )


class ThreadServer:
    """uvicorn serving an ASGI app on a free port in a background thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", ws="none", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def fake_tether() -> Iterator[FakeTether]:
    fake = FakeTether()
    server = ThreadServer(fake.app())
    fake.url = server.url
    yield fake
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_sdk() -> Iterator[None]:
    """Every test starts without a configured SDK and leaves none behind."""
    tether.shutdown()
    yield
    tether.shutdown()


@pytest.fixture
def sdk(fake_tether: FakeTether) -> FakeTether:
    """The SDK pointed at the fake tether (short batching delay)."""
    tether.init(fake_tether.url, api_key="tk_test", service_name="sdk-tests")
    return fake_tether
