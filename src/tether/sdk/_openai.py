"""`tether.instrument_openai(client)`: wraps `client.chat.completions.create` (sync or async,
streamed or not) to record LLM spans, and names the current run in the request headers so calls
through tether's LLM gateway land in the same run."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.propagate import get_global_textmap
from opentelemetry.trace import Span, Status, StatusCode

from tether.sdk import _values as v
from tether.sdk._config import active
from tether.sdk._llm import start_llm_span
from tether.sdk._run import current_run

C = TypeVar("C")


def run_headers() -> dict[str, str]:
    """X-Tether-Run-Id / -Task-Id / -User of the current run, and W3C `traceparent`."""
    headers: dict[str, str] = {}
    get_global_textmap().inject(headers)
    run = current_run()
    if run is not None and run.span is not None:
        headers["X-Tether-Run-Id"] = run.id
        if run.task_id:
            headers["X-Tether-Task-Id"] = run.task_id
        if run.user:
            headers["X-Tether-User"] = run.user
    return headers


def _is_gateway(client: Any) -> bool:
    """True when the client talks to tether's own LLM gateway (which records the call itself)."""
    base = str(getattr(client, "base_url", "")).rstrip("/")
    tether_url = active().url
    return base.startswith(tether_url + "/llm")


def instrument_openai(client: C, *, record: bool | None = None) -> C:
    """Instruments an `openai.OpenAI` / `openai.AsyncOpenAI` client in place and returns it.

    Every `chat.completions.create` gets the current run's headers; it is also recorded as an LLM
    span unless the client points at tether's gateway (`record=None` decides that; the gateway
    records gateway calls itself, so costs are not counted twice).

        client = tether.instrument_openai(OpenAI(base_url="http://127.0.0.1:7337/llm/v1"))
    """
    completions = client.chat.completions  # type: ignore[attr-defined]
    if getattr(completions, "_tether_instrumented", False):
        return client
    should_record = (not _is_gateway(client)) if record is None else record
    original = completions.create
    is_async = inspect.iscoroutinefunction(inspect.unwrap(original)) or type(
        completions
    ).__name__.startswith("Async")
    if is_async:
        completions.create = _async_create(original, should_record)
    else:
        completions.create = _sync_create(original, should_record)
    completions._tether_instrumented = True
    return client


def _with_headers(kwargs: dict[str, Any]) -> dict[str, Any]:
    extra = dict(kwargs.get("extra_headers") or {})
    for key, value in run_headers().items():
        extra.setdefault(key, value)
    return {**kwargs, "extra_headers": extra}


def _start(kwargs: dict[str, Any]) -> Span:
    return start_llm_span(kwargs.get("model"), input=kwargs.get("messages"), provider="openai")


def _finish(span: Span, response: Any) -> None:
    usage = getattr(response, "usage", None)
    choices = getattr(response, "choices", None) or []
    message = getattr(choices[0], "message", None) if choices else None
    output: Any = None
    if message is not None:
        calls = getattr(message, "tool_calls", None)
        output = getattr(message, "content", None)
        if calls:
            output = {"content": output, "tool_calls": [_dump(c) for c in calls]}
    _end(
        span,
        output,
        getattr(response, "model", None),
        getattr(usage, "prompt_tokens", None),
        getattr(usage, "completion_tokens", None),
    )


def _dump(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    return dump() if callable(dump) else obj


def _end(span: Span, output: Any, model: Any, tokens_in: Any, tokens_out: Any) -> None:
    v.set_io(span, v.OUTPUT, v.OUTPUT_MIME, output)
    span.set_attributes(
        v.clean(
            {
                v.RESPONSE_MODEL: model if isinstance(model, str) else None,
                v.INPUT_TOKENS: tokens_in,
                v.OUTPUT_TOKENS: tokens_out,
            }
        )
    )
    span.set_status(Status(StatusCode.OK))
    span.end()


def _fail(span: Span, exc: BaseException) -> None:
    v.mark_error(span, exc)
    span.end()


def _sync_create(original: Callable[..., Any], record: bool) -> Callable[..., Any]:
    def create(*args: Any, **kwargs: Any) -> Any:
        if not record:
            return original(*args, **_with_headers(kwargs))
        span = _start(kwargs)
        try:
            with trace.use_span(span, end_on_exit=False):
                kwargs = _with_headers(kwargs)  # traceparent names the LLM span
                result = original(*args, **kwargs)
        except BaseException as exc:
            _fail(span, exc)
            raise
        if kwargs.get("stream"):
            return _SyncStream(result, span)
        _finish(span, result)
        return result

    return create


def _async_create(original: Callable[..., Any], record: bool) -> Callable[..., Any]:
    async def create(*args: Any, **kwargs: Any) -> Any:
        if not record:
            return await original(*args, **_with_headers(kwargs))
        span = _start(kwargs)
        try:
            with trace.use_span(span, end_on_exit=False):
                kwargs = _with_headers(kwargs)  # traceparent names the LLM span
                result = await original(*args, **kwargs)
        except BaseException as exc:
            _fail(span, exc)
            raise
        if kwargs.get("stream"):
            return _AsyncStream(result, span)
        _finish(span, result)
        return result

    return create


class _Accumulator:
    """Collects a stream's text, model and usage; ends the span once."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self.parts: list[str] = []
        self.model: str | None = None
        self.usage: Any = None
        self.done = False

    def add(self, chunk: Any) -> None:
        self.model = getattr(chunk, "model", None) or self.model
        self.usage = getattr(chunk, "usage", None) or self.usage
        for choice in getattr(chunk, "choices", None) or []:
            text = getattr(getattr(choice, "delta", None), "content", None)
            if text:
                self.parts.append(text)

    def end(self, exc: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        if exc is not None:
            _fail(self.span, exc)
            return
        u = self.usage
        _end(
            self.span,
            "".join(self.parts),
            self.model,
            getattr(u, "prompt_tokens", None),
            getattr(u, "completion_tokens", None),
        )


class _SyncStream:
    """Wraps openai's `Stream`: iterate it as usual; the span ends when it is exhausted/closed."""

    def __init__(self, stream: Any, span: Span) -> None:
        self._stream = stream
        self._acc = _Accumulator(span)

    def __iter__(self) -> Iterator[Any]:
        try:
            for chunk in self._stream:
                self._acc.add(chunk)
                yield chunk
        except GeneratorExit:  # the caller stopped early: record what it received
            self._acc.end()
            raise
        except BaseException as exc:
            self._acc.end(exc)
            raise
        self._acc.end()

    def __enter__(self) -> _SyncStream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        self._stream.close()
        self._acc.end()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _AsyncStream:
    """Wraps openai's `AsyncStream` the same way."""

    def __init__(self, stream: Any, span: Span) -> None:
        self._stream = stream
        self._acc = _Accumulator(span)

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for chunk in self._stream:
                self._acc.add(chunk)
                yield chunk
        except GeneratorExit:  # the caller stopped early: record what it received
            self._acc.end()
            raise
        except BaseException as exc:
            self._acc.end(exc)
            raise
        self._acc.end()

    async def __aenter__(self) -> _AsyncStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self._stream.close()
        self._acc.end()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
