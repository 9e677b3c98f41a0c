"""The /llm routes: OpenAI-compatible /llm/v1 (chat completions, embeddings, models) and
Anthropic-compatible /llm/anthropic/v1/messages. Plain Starlette handlers: the hot path has no
dependency injection and forwards the agent's bytes untouched when nothing needs changing."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tether.core.errors import BadRequestError, TetherError
from tether.core.records import SpanRecord
from tether.gateway.llm import forward
from tether.gateway.llm.errors import error_response, malformed
from tether.gateway.llm.gateway import MOCK_SCRIPT_HEADER, MOCK_SESSION_HEADER, Call, Gateway
from tether.gateway.llm.provider import Target, Usage
from tether.gateway.llm.relay import StreamRelay

Api = Literal["openai", "anthropic"]
# refusals worth a span in the run (a malformed request is not)
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
_ANTHROPIC_PASS = ("anthropic-version", "anthropic-beta")
_RECORDED_REFUSALS = frozenset({"budget_exceeded", "run_killed", "policy_denied"})


def _positive_int(body: dict[str, Any], key: str, code: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequestError(f"{key} must be a positive integer", code=code)
    return value


def _requested_max_tokens(endpoint: str, body: dict[str, Any]) -> int | None:
    """The most output tokens one choice may have: the larger of the two fields when both are
    sent (providers differ in which one wins, so the bound must hold for either)."""
    if endpoint == "embeddings":
        return 0
    given = [
        v
        for key in ("max_completion_tokens", "max_tokens")
        if (v := _positive_int(body, key, "invalid_max_tokens")) is not None
    ]
    return max(given) if given else None


def _choices(endpoint: str, body: dict[str, Any]) -> int:
    """OpenAI's `n`: each choice may use max_tokens, so the worst case is n times larger."""
    if endpoint == "embeddings":
        return 1
    return _positive_int(body, "n", "invalid_n") or 1


def _validate(endpoint: str, body: dict[str, Any]) -> None:
    if endpoint == "embeddings":
        if body.get("input") in (None, "", []):
            raise BadRequestError("embeddings need an `input` (a string or a list)")
        return
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("the request needs `messages`, a non-empty list")


class LLMRoutes:
    """Handlers bound to one Gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/llm/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/llm/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/llm/v1/models", self.models, methods=["GET"]),
            Route("/llm/anthropic/v1/messages", self.messages, methods=["POST"]),
            Route("/llm/anthropic/v1/models", self.anthropic_models, methods=["GET"]),
        ]

    async def chat(self, request: Request) -> Response | ASGIApp:
        return await self._handle(request, "openai", "chat/completions")

    async def embeddings(self, request: Request) -> Response | ASGIApp:
        return await self._handle(request, "openai", "embeddings")

    async def messages(self, request: Request) -> Response | ASGIApp:
        return await self._handle(request, "anthropic", "messages")

    async def models(self, request: Request) -> Response:
        try:
            await self.gw.principal(request)
        except TetherError as exc:
            return error_response(exc, anthropic=False)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": self.gw.registry.owner_of(m)}
                for m in self.gw.registry.model_names("openai")]  # fmt: skip
        return Response(json.dumps({"object": "list", "data": data}),
                        media_type="application/json")  # fmt: skip

    async def anthropic_models(self, request: Request) -> Response:
        try:
            await self.gw.principal(request)
        except TetherError as exc:
            return error_response(exc, anthropic=True)
        names = self.gw.registry.model_names("anthropic")
        data = [{"type": "model", "id": m, "display_name": m,
                 "created_at": "1970-01-01T00:00:00Z"} for m in names]  # fmt: skip
        body = {"data": data, "has_more": False, "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None}  # fmt: skip
        return Response(json.dumps(body), media_type="application/json")

    async def _handle(self, request: Request, api: Api, endpoint: str) -> Response | ASGIApp:
        anthropic = api == "anthropic"
        gw = self.gw
        call: Call | None = None
        try:
            principal = await gw.principal(request)
            raw = await request.body()
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
                raise BadRequestError("the request body must be JSON") from None
            if not isinstance(body, dict):
                raise BadRequestError("the request body must be a JSON object")
            _validate(endpoint, body)
            max_tokens = _requested_max_tokens(endpoint, body)
            choices = _choices(endpoint, body)
            call = gw.new_call(request, principal, api, endpoint, body)
            call.request_bytes = len(raw)
            await gw.admit(call, max_tokens, choices=choices)
        except TetherError as exc:
            if call is not None and exc.type in _RECORDED_REFUSALS:
                await gw.record_refusal(_refusal_span(call, exc))
            return error_response(exc, anthropic)
        passed = _passed_headers(request, anthropic)
        script = gw.mock_scripts.get(call.caller.run_id)
        if script is not None:
            passed = {**(passed or {}), MOCK_SCRIPT_HEADER: script,
                      MOCK_SESSION_HEADER: call.caller.run_id}  # fmt: skip
        return await self._forward(call, raw, anthropic, passed)

    async def _forward(
        self, call: Call, raw: bytes, anthropic: bool, passed: dict[str, str] | None
    ) -> Response | ASGIApp:
        gw = self.gw
        body = call.body
        inject: dict[str, Any] = {}
        if call.admission.injected_max_tokens is not None:
            inject["max_tokens"] = call.admission.injected_max_tokens
        elif anthropic and "max_tokens" not in body:
            inject["max_tokens"] = gw.settings.budgets.default_max_tokens  # required by the API
        hide_usage = False
        if call.stream and not anthropic:
            opts = body.get("stream_options")
            opts = opts if isinstance(opts, dict) else {}
            if not opts.get("include_usage"):
                inject["stream_options"] = {**opts, "include_usage": True}
                hide_usage = True

        def body_for(target: Target) -> bytes:
            if not inject and target.model == call.model:
                return raw
            out = {**body, **inject, "model": target.model}
            if not anthropic and "max_tokens" in inject and _reasoning(target.model):
                out["max_completion_tokens"] = out.pop("max_tokens")
            return json.dumps(out).encode()

        finished = False
        try:
            try:
                attempt = await forward.send(gw.upstream.next(), call.targets, call.endpoint,
                                             body_for, stream=call.stream,
                                             extra_headers=passed)  # fmt: skip
            except TetherError as exc:
                finished = True
                await gw.finish(call, usage=None, output=None, error=exc.message,
                                status_code=exc.http_status, outcome="upstream_error")  # fmt: skip
                return error_response(exc, anthropic)
            call.served_by = attempt.target
            call.tries = attempt.tries
            provider = attempt.target.provider
            if call.stream:
                finished = True  # the relay finishes the call
                return StreamRelay(gw, call, attempt.response, provider.meter(hide_usage))
            call.ttft_ms = (time.perf_counter() - call.t0) * 1000.0
            content = attempt.response.content
            try:
                data = json.loads(content)
                if not isinstance(data, dict):
                    raise ValueError("not an object")
            except ValueError:
                bad = malformed(provider.config.name, "the body is not a JSON object")
                finished = True
                await gw.finish(call, usage=None, output=None, error=bad.message,
                                status_code=bad.http_status, outcome="upstream_error")  # fmt: skip
                return error_response(bad, anthropic)
            usage = provider.usage(data)
            text = provider.output_text(data)
            if not usage.reported:
                _count_output(usage, text, call)
            finished = True
            await gw.finish(call, usage=usage, output=text, error=None, status_code=200)
            return Response(content, 200, {"x-tether-run-id": call.caller.run_id},
                            media_type="application/json")  # fmt: skip
        finally:
            if not finished:  # cancelled or an unexpected error: never keep the hold
                await gw.finish(call, usage=None, output=None, error="the call was interrupted",
                                status_code=500, outcome="interrupted")  # fmt: skip


class FastPath:
    """ASGI middleware that hands an /llm request straight to its handler: the framework's
    exception middleware, exit stack, router and per-route wrappers (each wrapping every
    `send`) cost the gateway's hot path more than its kill check (issue 9). The handlers turn
    every TetherError into its JSON response themselves; an unexpected error still reaches the
    app's outer error middleware. Anything else (another path, a wrong method) goes to `app`."""

    def __init__(self, app: ASGIApp, routes: LLMRoutes) -> None:
        self.app = app
        self.table: dict[tuple[str, str], Any] = {}
        for route in routes.routes():
            assert isinstance(route, Route) and route.methods
            for method in route.methods:
                self.table[(route.path, method)] = route.endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self.table.get((scope["path"], scope["method"]))
            if handler is not None:
                response = await handler(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _reasoning(model: str) -> bool:
    """OpenAI's reasoning models refuse `max_tokens` and take `max_completion_tokens`."""
    name = model.rsplit("/", 1)[-1]
    return name.startswith(_REASONING_PREFIXES)


def _passed_headers(request: Request, anthropic: bool) -> dict[str, str] | None:
    """Protocol headers of the agent's SDK that the upstream must see (never credentials)."""
    if not anthropic:
        return None
    out = {k: request.headers[k] for k in _ANTHROPIC_PASS if k in request.headers}
    return out or None


def _count_output(usage: Usage, text: str, call: Call) -> None:
    """No usage from upstream: ~4 characters per token, never above the call's max_tokens."""
    usage.output_tokens = math.ceil(len(text) / 4)
    cap = call.admission.injected_max_tokens or call.body.get("max_tokens")
    if isinstance(cap, int):
        usage.output_tokens = min(usage.output_tokens, cap)


def _refusal_span(call: Call, exc: TetherError) -> SpanRecord:
    """A refused call is a span of kind `other` (not an LLM call) so the run shows why."""
    now = datetime.now(UTC)
    return SpanRecord(
        trace_id=call.trace_id, span_id=call.span_id, run_id=call.caller.run_id, kind="other",
        name=f"refused {call.model}", started_at=call.started_at, ended_at=now,
        parent_id=call.parent_id, is_root=call.is_root, model=call.model, status="error",
        error=exc.message,
        attributes={"tether.outcome": exc.type, "tether.key_id": call.caller.key_id,
                    "http.response.status_code": exc.http_status, **{
                        f"tether.{k}": v for k, v in exc.details.items()
                        if isinstance(v, (str, int, float))}},
        attribution=call.attribution,
    )  # fmt: skip
