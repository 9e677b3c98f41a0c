"""`tether mock-llm`: a scripted, deterministic OpenAI- and Anthropic-compatible upstream.

`create_mock_app(script)` serves /v1/chat/completions, /v1/embeddings, /v1/models (OpenAI) and
/v1/messages (Anthropic), streaming or not, with tool calls and faults from the script.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tether.gateway.llm.mock_script import (
    MODELS,
    Answer,
    Director,
    Script,
    embedding,
    last_user_text,
    message_text,
    parse_script,
    prompt_text,
)

CREATED = 1_700_000_000
SCRIPT_HEADER = "x-tether-mock-script"
SESSION_HEADER = "x-tether-mock-session"
MAX_SESSIONS = 10_000


class MockDisconnect(Exception):
    """Raised inside a stream to drop the connection mid-response (the `disconnect` fault)."""


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), status, media_type="application/json")


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class MockLLM:
    """State of one mock: the script director, a counter for ids, and the last requests seen."""

    def __init__(self, script: Script, api_key: str | None = None) -> None:
        self.script = script
        self.director = Director(script)
        # per-run scripts a caller sends (tether's gateway, for an eval attempt's fixtures):
        # session id -> its own director, so each run's replies come in its own order
        self.sessions: OrderedDict[str, Director] = OrderedDict()
        self.api_key = api_key
        self.ids = itertools.count(1)
        self.requests: deque[dict[str, Any]] = deque(maxlen=200)

    def _auth_error(self, request: Request, anthropic: bool) -> Response | None:
        if self.api_key is None:
            return None
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "")[7:]
        if given == self.api_key:
            return None
        if anthropic:
            body = {"type": "error", "error": {"type": "authentication_error",
                                               "message": "invalid x-api-key"}}  # fmt: skip
        else:
            body = {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key",
                              "type": "invalid_request_error", "param": None}}  # fmt: skip
        return _json(body, 401)

    def _director(self, request: Request) -> Director | None:
        """The script's director, or the session's own when the request carries a script
        (`x-tether-mock-script`, JSON, for session `x-tether-mock-session`); None if invalid."""
        raw = request.headers.get(SCRIPT_HEADER)
        if raw is None:
            return self.director
        session = request.headers.get(SESSION_HEADER, raw)
        found = self.sessions.get(session)
        if found is None:
            try:
                found = Director(parse_script(json.loads(raw)))
            except (ValueError, TypeError):
                return None
            self.sessions[session] = found
            if len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
        return found

    async def _body(self, request: Request) -> dict[str, Any]:
        body = json.loads(await request.body())
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        self.requests.append({"path": request.url.path, "headers": dict(request.headers),
                              "body": body})  # fmt: skip
        return body

    async def _before(self, answer: Answer, anthropic: bool, stream: bool) -> Response | None:
        if answer.latency_ms:
            await asyncio.sleep(answer.latency_ms / 1000)
        if answer.fault == "status":
            message = f"mock upstream fault: HTTP {answer.status}"
            if anthropic:
                body: dict[str, Any] = {
                    "type": "error",
                    "error": {"type": "api_error", "message": message},
                }
            else:
                body = {"error": {"message": message, "type": "server_error", "code": None,
                                  "param": None}}  # fmt: skip
            return _json(body, answer.status)
        if answer.fault == "timeout" and (not stream or answer.fault_after_chunks == 0):
            await asyncio.sleep(answer.hang_s)
        return None

    # ------------------------------------------------------------------ OpenAI

    async def chat(self, request: Request) -> Response:
        if (denied := self._auth_error(request, anthropic=False)) is not None:
            return denied
        try:
            body = await self._body(request)
            messages = body["messages"]
            model = str(body["model"])
        except (ValueError, KeyError, TypeError):
            return _json({"error": {"message": "model and messages are required",
                                    "type": "invalid_request_error", "code": None,
                                    "param": "messages"}}, 400)  # fmt: skip
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        director = self._director(request)
        if director is None:
            return _json({"error": {"message": "x-tether-mock-script is not a valid mock script",
                                    "type": "invalid_request_error", "code": None,
                                    "param": None}}, 400)  # fmt: skip
        answer = director.answer(prompt_text(messages), last_user_text(messages), max_tokens)
        if (early := await self._before(answer, False, bool(body.get("stream")))) is not None:
            return early
        served = answer.model or model
        rid = f"chatcmpl-mock-{next(self.ids)}"
        usage = {"prompt_tokens": answer.input_tokens, "completion_tokens": answer.output_tokens,
                 "total_tokens": answer.input_tokens + answer.output_tokens}  # fmt: skip
        if body.get("stream"):
            opts = body.get("stream_options") or {}
            with_usage = self.script.usage and bool(opts.get("include_usage"))
            return self._stream(self._openai_chunks(answer, rid, served, usage if with_usage
                                                    else None), answer)  # fmt: skip
        if answer.fault == "malformed":
            return Response(b'{"id": "broken', 200, media_type="application/json")
        message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
        if answer.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{rid[-6:]}_{i}", "type": "function",
                 "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                for i, c in enumerate(answer.tool_calls)
            ]  # fmt: skip
        data: dict[str, Any] = {
            "id": rid, "object": "chat.completion", "created": CREATED, "model": served,
            "choices": [{"index": 0, "message": message, "finish_reason": answer.finish,
                         "logprobs": None}],
        }  # fmt: skip
        if self.script.usage:
            data["usage"] = usage
        return _json(data)

    def _openai_chunks(
        self, answer: Answer, rid: str, model: str, usage: dict[str, int] | None
    ) -> list[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _sse({"id": rid, "object": "chat.completion.chunk", "created": CREATED,
                         "model": model, "choices": [{"index": 0, "delta": delta,
                                                      "finish_reason": finish}]})  # fmt: skip

        out = [chunk({"role": "assistant", "content": ""})]
        for i, word in enumerate(answer.words):
            out.append(chunk({"content": word if i == 0 else " " + word}))
        for i, call in enumerate(answer.tool_calls):
            args = json.dumps(call.arguments)
            half = len(args) // 2
            out.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": f"call_{rid[-6:]}_{i}",
                                "type": "function",
                                "function": {"name": call.name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for piece in (args[:half], args[half:]):
                out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
        out.append(chunk({}, answer.finish))
        if usage is not None:
            out.append(_sse({"id": rid, "object": "chat.completion.chunk", "created": CREATED,
                             "model": model, "choices": [], "usage": usage}))  # fmt: skip
        out.append(b"data: [DONE]\n\n")
        return out

    def _stream(self, chunks: list[bytes], answer: Answer) -> StreamingResponse:
        if answer.fault == "malformed" and not answer.fault_after_chunks:
            chunks = [b"data: {not json\n\n"]

        async def body() -> AsyncIterator[bytes]:
            for i, piece in enumerate(chunks):
                if answer.fault_after_chunks and i == answer.fault_after_chunks:
                    if answer.fault == "disconnect":
                        raise MockDisconnect("scripted disconnect")
                    if answer.fault == "timeout":
                        await asyncio.sleep(answer.hang_s)
                    if answer.fault == "malformed":
                        yield b"data: {not json\n\n"
                        return
                if i and answer.chunk_delay_ms:
                    await asyncio.sleep(answer.chunk_delay_ms / 1000)
                yield piece
            if answer.fault == "disconnect":
                raise MockDisconnect("scripted disconnect")

        return StreamingResponse(body(), media_type="text/event-stream")

    async def embeddings(self, request: Request) -> Response:
        if (denied := self._auth_error(request, anthropic=False)) is not None:
            return denied
        try:
            body = await self._body(request)
            raw = body["input"]
            model = str(body["model"])
        except (ValueError, KeyError, TypeError):
            return _json({"error": {"message": "model and input are required",
                                    "type": "invalid_request_error", "code": None,
                                    "param": "input"}}, 400)  # fmt: skip
        items = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
        texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in items]
        dim = int(body.get("dimensions") or self.script.embedding_dim)
        tokens = sum(max(1, len(t.split())) for t in texts)
        data = [{"object": "embedding", "index": i, "embedding": embedding(t, dim)}
                for i, t in enumerate(texts)]  # fmt: skip
        out: dict[str, Any] = {"object": "list", "data": data, "model": model}
        if self.script.usage:
            out["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _json(out)

    async def models(self, request: Request) -> Response:
        names = list(MODELS) + sorted(
            {r.model for r in self.script.replies if r.model} - set(MODELS)
        )
        return _json({"object": "list", "data": [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "tether-mock"}
            for m in names]})  # fmt: skip

    # ------------------------------------------------------------------ Anthropic

    async def messages(self, request: Request) -> Response:
        if (denied := self._auth_error(request, anthropic=True)) is not None:
            return denied
        try:
            body = await self._body(request)
            messages = body["messages"]
            model = str(body["model"])
            max_tokens = int(body["max_tokens"])
        except (ValueError, KeyError, TypeError):
            return _json({"type": "error", "error": {
                "type": "invalid_request_error",
                "message": "model, messages and max_tokens are required"}}, 400)  # fmt: skip
        prompt = prompt_text(messages, body.get("system"))
        director = self._director(request)
        if director is None:
            return _json({"type": "error", "error": {
                "type": "invalid_request_error",
                "message": "x-tether-mock-script is not a valid mock script"}}, 400)  # fmt: skip
        answer = director.answer(prompt, last_user_text(messages), max_tokens)
        if (early := await self._before(answer, True, bool(body.get("stream")))) is not None:
            return early
        served = answer.model or model
        mid = f"msg_mock{next(self.ids):06d}"
        stop = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}[answer.finish]
        if body.get("stream"):
            return self._stream(self._anthropic_events(answer, mid, served, stop), answer)
        if answer.fault == "malformed":
            return Response(b'{"type": "message", "content": [', 200,
                            media_type="application/json")  # fmt: skip
        content: list[dict[str, Any]] = []
        if answer.text:
            content.append({"type": "text", "text": answer.text})
        for i, call in enumerate(answer.tool_calls):
            content.append({"type": "tool_use", "id": f"toolu_{mid[-6:]}_{i}", "name": call.name,
                            "input": call.arguments})  # fmt: skip
        data: dict[str, Any] = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": served,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
        }
        if self.script.usage:
            data["usage"] = {"input_tokens": answer.input_tokens,
                             "output_tokens": answer.output_tokens}  # fmt: skip
        return _json(data)

    def _anthropic_events(self, answer: Answer, mid: str, model: str, stop: str) -> list[bytes]:
        start: dict[str, Any] = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if self.script.usage:
            start["usage"] = {"input_tokens": answer.input_tokens, "output_tokens": 1}
        out = [_sse({"type": "message_start", "message": start}, "message_start")]
        index = 0
        if answer.words:
            out.append(_sse({"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}},
                            "content_block_start"))  # fmt: skip
            for i, word in enumerate(answer.words):
                out.append(_sse({"type": "content_block_delta", "index": 0, "delta": {
                    "type": "text_delta", "text": word if i == 0 else " " + word}},
                    "content_block_delta"))  # fmt: skip
            out.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
            index = 1
        for i, call in enumerate(answer.tool_calls, start=index):
            out.append(_sse({"type": "content_block_start", "index": i, "content_block": {
                "type": "tool_use", "id": f"toolu_{mid[-6:]}_{i}", "name": call.name,
                "input": {}}}, "content_block_start"))  # fmt: skip
            out.append(_sse({"type": "content_block_delta", "index": i, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(call.arguments)}},
                "content_block_delta"))  # fmt: skip
            out.append(_sse({"type": "content_block_stop", "index": i}, "content_block_stop"))
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
        }
        if self.script.usage:
            delta["usage"] = {"output_tokens": answer.output_tokens}
        out.append(_sse(delta, "message_delta"))
        out.append(_sse({"type": "message_stop"}, "message_stop"))
        return out

    async def seen(self, request: Request) -> Response:
        """The last requests received (headers included), for tests of what tether forwards."""
        return JSONResponse(list(self.requests))


def create_mock_app(script: Script | None = None, *, api_key: str | None = None) -> Starlette:
    """The mock upstream as an ASGI app; `app.state.mock` is its MockLLM (requests seen, script)."""
    mock = MockLLM(script or Script(), api_key)
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", mock.chat, methods=["POST"]),
            Route("/v1/embeddings", mock.embeddings, methods=["POST"]),
            Route("/v1/models", mock.models, methods=["GET"]),
            Route("/v1/messages", mock.messages, methods=["POST"]),
            Route("/_mock/requests", mock.seen, methods=["GET"]),
        ]
    )
    app.state.mock = mock
    return app


__all__ = ["MockDisconnect", "MockLLM", "create_mock_app", "message_text"]
