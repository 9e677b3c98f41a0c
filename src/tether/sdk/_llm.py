"""Recording LLM calls made without tether's gateway: `tether.record_llm(...)` after the fact, or
`with tether.llm_span(...) as call:` around the call. tether prices them from the token counts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from tether.sdk import _values as v
from tether.sdk._config import active


class LlmCall:
    """The LLM span being recorded by `llm_span`; fill in what the provider answered."""

    def __init__(self, span: Span) -> None:
        self.span = span

    def set_output(
        self,
        output: Any,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        response_model: str | None = None,
    ) -> None:
        v.set_io(self.span, v.OUTPUT, v.OUTPUT_MIME, output)
        self.set_usage(
            input_tokens=input_tokens, output_tokens=output_tokens, response_model=response_model
        )

    def set_usage(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        response_model: str | None = None,
    ) -> None:
        self.span.set_attributes(
            v.clean(
                {
                    v.INPUT_TOKENS: input_tokens,
                    v.OUTPUT_TOKENS: output_tokens,
                    v.RESPONSE_MODEL: response_model,
                }
            )
        )


def llm_attributes(model: str | None, provider: str | None) -> dict[str, Any]:
    return v.clean(
        {
            v.SPAN_KIND: "LLM",
            v.OPERATION: "chat",
            v.REQUEST_MODEL: model,
            v.SYSTEM: provider,
        }
    )


def start_llm_span(
    model: str | None,
    *,
    input: Any = None,
    provider: str | None = None,
    name: str | None = None,
    start_time_ns: int | None = None,
) -> Span:
    span = active().tracer.start_span(
        name or f"chat {model or 'llm'}",
        attributes=llm_attributes(model, provider),
        start_time=start_time_ns,
    )
    v.set_io(span, v.INPUT, v.INPUT_MIME, input)
    return span


@contextmanager
def llm_span(
    *, model: str, input: Any = None, provider: str | None = None, name: str | None = None
) -> Iterator[LlmCall]:
    """Times an LLM call you make yourself; an exception marks the span failed and propagates.

    with tether.llm_span(model="gpt-4o-mini", input=messages) as call:
        reply = my_client.complete(messages)
        call.set_output(reply.text, input_tokens=reply.usage.input,
                        output_tokens=reply.usage.output)
    """
    span = start_llm_span(model, input=input, provider=provider, name=name)
    with trace.use_span(
        span, end_on_exit=True, record_exception=False, set_status_on_exception=False
    ):
        try:
            yield LlmCall(span)
        except BaseException as exc:
            v.mark_error(span, exc)
            raise
        span.set_status(Status(StatusCode.OK))


def record_llm(
    *,
    model: str,
    input: Any = None,
    output: Any = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    latency_ms: float | None = None,
    response_model: str | None = None,
    provider: str | None = None,
    error: str | None = None,
    name: str | None = None,
) -> None:
    """Records an LLM call that already happened (ending now, lasting `latency_ms`) in the
    current run.

        tether.record_llm(model="gpt-4o-mini", input=messages, output=text,
                          input_tokens=812, output_tokens=64, latency_ms=930)
    """
    end_ns = time.time_ns()
    start_ns = end_ns - int((latency_ms or 0.0) * 1_000_000)
    span = start_llm_span(model, input=input, provider=provider, name=name, start_time_ns=start_ns)
    call = LlmCall(span)
    if output is not None:
        v.set_io(span, v.OUTPUT, v.OUTPUT_MIME, output)
    call.set_usage(
        input_tokens=input_tokens, output_tokens=output_tokens, response_model=response_model
    )
    if error:
        span.set_status(Status(StatusCode.ERROR, error))
    else:
        span.set_status(Status(StatusCode.OK))
    span.end(end_time=end_ns)
