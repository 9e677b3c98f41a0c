"""Relays an upstream SSE stream to the agent while metering it, and ends it early on a kill,
the run's deadline, the client leaving or an upstream fault: the agent gets a final error
event and the call is charged for what was streamed."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anyio
import httpx
from starlette.types import Receive, Scope, Send

from tether.core.errors import RunKilledError, TetherError, UpstreamError
from tether.gateway.llm.errors import from_transport, malformed, sse_error
from tether.gateway.llm.gateway import Call, Gateway
from tether.gateway.llm.provider import StreamMeter

log = logging.getLogger("tether.gateway")


class StreamRelay:
    """An ASGI response: the open upstream response goes to the client event by event."""

    def __init__(self, gateway: Gateway, call: Call, upstream: httpx.Response,
                 meter: StreamMeter) -> None:  # fmt: skip
        self.gateway = gateway
        self.call = call
        self.upstream = upstream
        self.meter = meter
        self.anthropic = call.api == "anthropic"
        self.error: TetherError | None = None
        self.outcome = "ok"
        self.completed = False
        self._buf = b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = self.call
        handle = self.gateway.killswitch.register(
            call.caller.run_id, deadline=call.admission.deadline
        )
        client_gone = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-tether-run-id", call.caller.run_id.encode()),
            ]})  # fmt: skip
            async with anyio.create_task_group() as tg:

                async def watch_client() -> None:
                    nonlocal client_gone
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    client_gone = True
                    tg.cancel_scope.cancel()

                async def watch_kill() -> None:
                    await handle.killed.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(watch_client)
                tg.start_soon(watch_kill)
                try:
                    await self._pump(send)
                except httpx.HTTPError as exc:
                    cfg = self.call.served_by.provider.config if self.call.served_by else None
                    self.error = from_transport(exc, cfg.name if cfg else "?", str(
                        self.upstream.request.url))  # fmt: skip
                    self.outcome = "upstream_error"
                except _Malformed as exc:
                    self.error = malformed(exc.provider, exc.detail)
                    self.outcome = "upstream_error"
                except OSError:  # the client's socket broke while tether was writing to it
                    client_gone = True
                except Exception as exc:  # a request boundary: end the stream with a reason
                    log.exception("relaying a stream of run %s failed", call.caller.run_id)
                    self.error = UpstreamError(f"tether could not relay the stream: {exc}")
                    self.outcome = "relay_error"
                tg.cancel_scope.cancel()
            if handle.killed.is_set() and not self.completed:
                self.outcome = "killed"
                self.error = RunKilledError(
                    f"run {call.caller.run_id} was killed ({handle.reason}); the stream was "
                    "ended by tether", run_id=call.caller.run_id,
                )  # fmt: skip
            elif client_gone and not self.completed:
                self.outcome = "client_disconnected"
            if self.error is not None and not client_gone:
                await send({"type": "http.response.body", "body": sse_error(self.error,
                            self.anthropic), "more_body": True})  # fmt: skip
            if not client_gone:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.gateway.killswitch.unregister(handle)
            with anyio.CancelScope(shield=True):
                await self.upstream.aclose()
                await self._finish()

    async def _finish(self) -> None:
        err = self.error
        msg: str | None = None
        if err is None and self.outcome == "client_disconnected":
            msg = "the client went away mid-stream"
        else:
            msg = err.message if err else None
        await self.gateway.finish(
            self.call, usage=self.meter.usage, output="".join(self.meter.text), error=msg,
            status_code=200, outcome=self.outcome,
        )  # fmt: skip

    async def _pump(self, send: Send) -> None:
        call = self.call
        async for raw in self.upstream.aiter_bytes():
            if call.ttft_ms is None:
                call.ttft_ms = (time.perf_counter() - call.t0) * 1000.0
            self._buf += raw.replace(b"\r\n", b"\n") if b"\r" in raw else raw
            out = []
            while True:
                end = self._buf.find(b"\n\n")
                if end < 0:
                    break
                event = self._buf[: end + 2]
                self._buf = self._buf[end + 2 :]
                if self._inspect(event):
                    out.append(event)
            if out:
                await send({"type": "http.response.body", "body": b"".join(out),
                            "more_body": True})  # fmt: skip
        if not self.completed and self.error is None:
            provider = call.served_by.provider.config.name if call.served_by else "?"
            raise _Malformed(provider, "the stream ended before its last event")

    def _inspect(self, event: bytes) -> bool:
        """Meters one SSE event; False when it must not be relayed."""
        data = None
        name = None
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                part = line[5:].strip()
                data = part if data is None else data + b"\n" + part
            elif line.startswith(b"event:"):
                name = line[6:].strip()
        if data is None:
            return True  # comments and keep-alives
        if data == b"[DONE]":
            self.completed = True
            return True
        try:
            payload: Any = json.loads(data)
        except ValueError:
            provider = self.call.served_by.provider.config.name if self.call.served_by else "?"
            raise _Malformed(provider, "an event that is not JSON") from None
        if not isinstance(payload, dict):
            return True
        if name == b"error" or payload.get("type") == "error" or payload.get("error"):
            detail = payload.get("error")
            message = detail.get("message") if isinstance(detail, dict) else str(detail)
            provider = self.call.served_by.provider.config.name if self.call.served_by else "?"
            self.error = UpstreamError(f"provider {provider} failed mid-stream: {message}",
                                       provider=provider)  # fmt: skip
            self.outcome = "upstream_error"
            self.completed = True
            return False
        if self.anthropic and payload.get("type") == "message_stop":
            self.completed = True
        return self.meter.feed(payload)


class _Malformed(Exception):
    def __init__(self, provider: str, detail: str) -> None:
        super().__init__(detail)
        self.provider = provider
        self.detail = detail
