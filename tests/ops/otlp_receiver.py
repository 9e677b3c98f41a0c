"""A receiving OTLP/HTTP server for the export tests: decodes protobuf trace exports and keeps
every span it was sent; `fail_with` makes it answer an error status instead."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


class Receiver:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v1/traces"
        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        self.fail_with: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def _export(self, request: Request) -> Response:
        self.requests += 1
        if self.fail_with is not None:
            return Response(b"", status_code=self.fail_with)
        req = ExportTraceServiceRequest.FromString(await request.body())
        for rs in req.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append({
                        "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(), "name": s.name,
                        "attributes": {a.key: _value(a.value) for a in s.attributes},
                        "resource": resource, "status": s.status.code,
                    })  # fmt: skip
        body = ExportTraceServiceResponse().SerializeToString()
        return Response(body, media_type="application/x-protobuf")

    def start(self) -> None:
        app = Starlette(routes=[Route("/v1/traces", self._export, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical",
                                lifespan="off", access_log=False)  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the OTLP receiver did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        self._server = None

    def keys(self) -> list[tuple[str, str]]:
        return [(s["trace_id"], s["span_id"]) for s in self.spans]
