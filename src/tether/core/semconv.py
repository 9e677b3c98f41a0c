"""Maps one decoded OTLP span to a SpanRecord: OpenTelemetry GenAI, OpenInference and Langfuse
attributes, tether's own `tether.*` attribution, cost from the price table, redaction, truncation.
Pure: never raises on attribute content (a bad value is ignored, not fatal)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any, NamedTuple

from tether.core.errors import BadRequestError
from tether.core.money import usd_to_nusd
from tether.core.pricing import PriceTable
from tether.core.records import (
    RunAttribution,
    SpanRecord,
    run_id_for_trace,
    span_record,
    valid_run_id,
)
from tether.core.redact import redactor
from tether.core.semtext import (
    as_text,
    clean_attributes,
    clean_attributes_as,
    clean_text,
    json_obj,
    key_plan,
)

STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)  # a timedelta times an int: half timedelta(...)'s cost
# 2^63 - 1 ns (2262-04-11): what a signed 64-bit nanosecond time holds, as most OTLP consumers
# (collectors, ClickHouse, Go) store it. 2^64 - 1, the unsigned sentinel some senders use for
# "unknown", is refused rather than stored as the year 2554.
_MAX_NS = 2**63 - 1
_MAX_TOKENS = 10**12
_MAX_COST_USD = Decimal(1_000_000)

_OPENINFERENCE_KIND = {
    "LLM": "llm", "TOOL": "tool", "AGENT": "agent", "CHAIN": "chain", "RETRIEVER": "retrieval",
    "RERANKER": "retrieval", "EMBEDDING": "embedding", "GUARDRAIL": "other", "EVALUATOR": "other",
}  # fmt: skip
_LANGFUSE_KIND = {
    "generation": "llm", "agent": "agent", "tool": "tool", "chain": "chain",
    "retriever": "retrieval", "embedding": "embedding", "span": "other", "event": "other",
    "evaluator": "other", "guardrail": "other",
}  # fmt: skip
_GENAI_OPERATION_KIND = {
    "chat": "llm", "text_completion": "llm", "generate_content": "llm", "completion": "llm",
    "embeddings": "embedding", "embedding": "embedding", "execute_tool": "tool",
    "invoke_agent": "agent", "create_agent": "agent",
}  # fmt: skip
_TETHER_KINDS = frozenset(
    {"agent", "llm", "tool", "retrieval", "embedding", "approval", "chain", "other"}
)

_MODEL_KEYS = ("gen_ai.request.model", "llm.model_name", "langfuse.observation.model.name")
_SERVED_KEYS = ("gen_ai.response.model",)
_INPUT_TOKEN_KEYS = (
    "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt",
)  # fmt: skip
_OUTPUT_TOKEN_KEYS = (
    "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion",
)  # fmt: skip
_CACHED_TOKEN_KEYS = (
    "gen_ai.usage.cache_read_input_tokens", "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cached_tokens", "llm.token_count.prompt_details.cache_read",
)  # fmt: skip
_COST_KEYS = ("tether.cost_usd", "gen_ai.usage.cost", "llm.cost.total")
_INPUT_KEYS = (
    "tether.input", "input.value", "langfuse.observation.input", "gen_ai.input.messages",
    "gen_ai.prompt", "gen_ai.tool.call.arguments",
)  # fmt: skip
_OUTPUT_KEYS = (
    "tether.output", "output.value", "langfuse.observation.output", "gen_ai.output.messages",
    "gen_ai.completion", "gen_ai.tool.call.result",
)  # fmt: skip
_ATTRIBUTION_KEYS: dict[str, tuple[str, ...]] = {
    "agent": ("tether.agent", "gen_ai.agent.name", "langfuse.trace.metadata.agent",
              "service.name", "langfuse.trace.name"),
    "version": ("tether.agent_version", "gen_ai.agent.version", "langfuse.trace.metadata.version",
                "langfuse.version", "service.version"),
    "task_id": ("tether.task_id", "langfuse.trace.metadata.task_id", "session.id",
                "langfuse.session.id", "gen_ai.conversation.id"),
    "user": ("tether.user", "user.id", "langfuse.user.id", "enduser.id"),
}  # fmt: skip
_ATTRIBUTION_KEYSET = frozenset(k for keys in _ATTRIBUTION_KEYS.values() for k in keys)
_TOOL_NAME_KEYS = ("gen_ai.tool.name", "tool.name")
_TOTAL_TOKEN_KEYS = ("llm.token_count.total", "gen_ai.usage.total_tokens")
_KIND_TABLES: tuple[tuple[str, Mapping[str, str], Callable[[str], str]], ...] = (
    ("openinference.span.kind", _OPENINFERENCE_KIND, str.upper),
    ("langfuse.observation.type", _LANGFUSE_KIND, str.lower),
    ("gen_ai.operation.name", _GENAI_OPERATION_KIND, str.lower),
)
_INDEXED_IN = ("gen_ai.prompt.", "llm.input_messages.")
_INDEXED_OUT = ("gen_ai.completion.", "llm.output_messages.")
_MAX_PLANS = 512


_NOTHING: Mapping[str, Any] = MappingProxyType({})


# Named tuples rather than frozen dataclasses: decoding makes one per span and per event, and a
# frozen dataclass pays an object.__setattr__ per field to be built; a tuple is immutable anyway.
class SpanEvent(NamedTuple):
    name: str
    time_ns: int = 0
    attributes: Mapping[str, Any] = _NOTHING


class OtlpSpan(NamedTuple):
    """A span as decoded from OTLP: hex ids, nanosecond times, python attribute values."""

    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int = 0
    parent_id: str | None = None
    attributes: Mapping[str, Any] = _NOTHING
    resource: Mapping[str, Any] = _NOTHING
    status_code: int = STATUS_UNSET
    status_message: str = ""
    events: Sequence[SpanEvent] = ()


@dataclass(frozen=True)
class MapOptions:
    prices: PriceTable
    redact_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        lowered = tuple(f.lower() for f in self.redact_fields if f)
        object.__setattr__(self, "redact_fields", lowered)


def map_spans(spans: Sequence[OtlpSpan], opts: MapOptions) -> list[SpanRecord]:
    """Maps a batch; spans with no run id of their own join the run named in their trace."""
    mapper = _Mapper(opts)
    records: list[SpanRecord] = []
    explicit: list[bool] = []
    named: dict[str, str] = {}
    for s in spans:
        rec, has_run_id = mapper.map(s)
        records.append(rec)
        explicit.append(has_run_id)
        if has_run_id:
            named.setdefault(rec.trace_id, rec.run_id)
    if not named:
        return records
    return [
        replace(r, run_id=named[r.trace_id]) if not e and r.trace_id in named else r
        for r, e in zip(records, explicit, strict=True)
    ]


def map_span(span: OtlpSpan, opts: MapOptions) -> SpanRecord:
    """One span -> SpanRecord. Raises BadRequestError only for times no datetime can hold."""
    return _Mapper(opts).map(span)[0]


class _Keys:
    """What the mapping reads among one set of attribute names, worked out once per set: the
    spans of an instrumentation carry the same few sets, and the lookup lists cut to the names
    present read each value once instead of probing some forty absent keys per span."""

    __slots__ = ("attribution", "cached", "clean", "cost", "cost_details", "explicit_kind",
                 "in_tokens", "indexed_in", "indexed_out", "inputs", "kind_tables", "model",
                 "out_tokens", "outputs", "run_id", "run_root", "served", "tool_names",
                 "tool_parameters", "totals", "ttft", "usage")  # fmt: skip

    def __init__(self, names: tuple[Any, ...], redact: tuple[str, ...]) -> None:
        has = set(names)

        def present(keys: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(k for k in keys if k in has)

        def prefixed(prefixes: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(p for p in prefixes
                         if any(isinstance(n, str) and n.startswith(p) for n in names))  # fmt: skip

        self.explicit_kind = "tether.span.kind" in has
        self.kind_tables = tuple(t for t in _KIND_TABLES if t[0] in has)
        self.model, self.served = present(_MODEL_KEYS), present(_SERVED_KEYS)
        self.tool_names, self.totals = present(_TOOL_NAME_KEYS), present(_TOTAL_TOKEN_KEYS)
        self.in_tokens, self.out_tokens = present(_INPUT_TOKEN_KEYS), present(_OUTPUT_TOKEN_KEYS)
        self.cached, self.cost = present(_CACHED_TOKEN_KEYS), present(_COST_KEYS)
        self.usage = "langfuse.observation.usage_details" in has
        self.cost_details = "langfuse.observation.cost_details" in has
        self.inputs, self.outputs = present(_INPUT_KEYS), present(_OUTPUT_KEYS)
        self.indexed_in, self.indexed_out = prefixed(_INDEXED_IN), prefixed(_INDEXED_OUT)
        self.tool_parameters = "tool.parameters" in has
        self.run_root, self.run_id = "tether.run.root" in has, "tether.run_id" in has
        self.ttft = "tether.ttft_ms" in has
        self.attribution = not _ATTRIBUTION_KEYSET.isdisjoint(has)
        self.clean = key_plan(names, redact)


# per set of redacted field names: attribute names -> their _Keys (shared by every batch; a
# sender inventing new names each span costs a plan per span, and the cache a bounded size)
_PLANS: dict[tuple[str, ...], dict[tuple[Any, ...], _Keys]] = {}


class _Mapper:
    """Maps the spans of one batch. What depends on a span's resource alone (its attribution
    fallbacks, its run id, its cleaned attributes) is worked out once per resource: the spans
    of an export request share a handful of resources."""

    def __init__(self, opts: MapOptions) -> None:
        self.prices = opts.prices
        self.redact = opts.redact_fields
        self.text = redactor(opts.redact_fields).text
        self._resources: dict[int, tuple[Mapping[str, Any], _Resource]] = {}
        self._plans = _PLANS.setdefault(self.redact, {})

    def keys(self, names: tuple[Any, ...]) -> _Keys:
        plans = self._plans
        if len(plans) >= _MAX_PLANS:
            plans.clear()
        plan = plans[names] = _Keys(names, self.redact)
        return plan

    def resource(self, res: Mapping[str, Any]) -> _Resource:
        hit = self._resources.get(id(res))
        if hit is not None and hit[0] is res:
            return hit[1]
        info = _Resource(res, self.redact)
        self._resources[id(res)] = (res, info)
        return info

    def map(self, span: OtlpSpan) -> tuple[SpanRecord, bool]:
        """(the record, whether the span names its run itself)."""
        a, res = span.attributes, span.resource
        names = tuple(a)
        p = self._plans.get(names) or self.keys(names)
        rinfo = self.resource(res)
        kind = _kind(a, p)
        parent = span.parent_id
        is_root = not parent or (p.run_root and _truthy(a.get("tether.run.root")))
        if kind == "other" and is_root and not parent:
            kind = "agent"
        model = _first_str(a, p.model) if p.model else None
        served = _first_str(a, p.served) if p.served else None
        in_tok, out_tok, cached = _tokens(a, p)
        cost_nusd, unknown = _cost(a, p, kind, model, served, in_tok, out_tok, cached,
                                   self.prices)  # fmt: skip
        status, error = _status(span)
        name = span.name
        if kind == "tool" and p.tool_names:
            name = _first_str(a, p.tool_names) or name
        in_key, in_text = _input(span, kind, p)
        out_key, out_text = _output(span, kind, p)
        # the text lifted into input/output is not stored twice
        attrs: dict[str, Any] = clean_attributes_as(a, p.clean, self.redact, (in_key, out_key))
        if is_root and res:
            attrs["resource"] = rinfo.cleaned()
        started = _time(span.start_ns, span, "start")
        ended = _time(span.end_ns, span, "end") if span.end_ns else None
        if span.end_ns and span.end_ns < span.start_ns:
            raise BadRequestError(
                f"span {span.span_id} of trace {span.trace_id}: end time {span.end_ns} is before "
                f"its start time {span.start_ns}; send end_time_unix_nano >= start_time_unix_nano "
                "(or 0 for a span still running)"
            )
        run_id = (_run_id_in(a) if p.run_id else None) or rinfo.run_id
        attribution = _attribution(a, res) if p.attribution else rinfo.attribution
        text = self.text
        record = span_record(
            trace_id=span.trace_id,
            span_id=span.span_id,
            run_id=run_id or run_id_for_trace(span.trace_id),
            kind=kind,
            name=clean_text(text(name), 500) or "(unnamed)",
            started_at=started,
            ended_at=ended,
            parent_id=parent or None,
            is_root=is_root,
            input=clean_text(text(in_text)) if in_text else None,
            output=clean_text(text(out_text)) if out_text else None,
            model=clean_text(model, 200),
            model_served=clean_text(served, 200),
            input_tokens=in_tok,
            output_tokens=out_tok,
            cached_tokens=cached,
            cost_nusd=cost_nusd,
            cost_unknown=unknown,
            ttft_ms=_ttft(a) if p.ttft else None,
            status=status,
            error=clean_text(text(error)) if error else None,
            attributes=attrs,
            attribution=attribution,
        )
        return record, run_id is not None


class _Resource:
    """What a resource contributes to each of its spans."""

    def __init__(self, res: Mapping[str, Any], redact: tuple[str, ...]) -> None:
        self._res, self._redact = res, redact
        self.run_id = _run_id_in(res)
        self.attribution = _attribution({}, res)
        self._cleaned: dict[str, Any] | None = None

    def cleaned(self) -> dict[str, Any]:
        """The resource's attributes as a root span stores them (one copy per root)."""
        if self._cleaned is None:
            self._cleaned = clean_attributes(self._res, self._redact)
        return dict(self._cleaned)


def _run_id_in(attrs: Mapping[str, Any]) -> str | None:
    v = attrs.get("tether.run_id")
    return v if isinstance(v, str) and valid_run_id(v) else None


def _kind(a: Mapping[str, Any], p: _Keys) -> str:
    if p.explicit_kind:
        explicit = a.get("tether.span.kind")
        if isinstance(explicit, str) and explicit.lower() in _TETHER_KINDS:
            return explicit.lower()
    for key, table, norm in p.kind_tables:
        v = a.get(key)
        if isinstance(v, str) and norm(v) in table:
            return table[norm(v)]
    if (p.model and _first_str(a, p.model)) or p.in_tokens:
        return "llm"
    if p.tool_names and _first_str(a, p.tool_names):
        return "tool"
    return "other"


def _first_str(attrs: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    for k in keys:
        v = attrs.get(k)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return None


def _truthy(v: Any) -> bool:
    return v is True or (isinstance(v, str) and v.lower() in ("true", "1", "yes"))


def _int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        n = v
    elif isinstance(v, float) and v == v and abs(v) < 1e15 and v.is_integer():
        n = int(v)
    elif isinstance(v, str) and v.strip().isdigit() and len(v.strip()) <= 15:
        n = int(v.strip())
    else:
        return None
    return n if 0 <= n <= _MAX_TOKENS else None


def _first_int(attrs: Mapping[str, Any], keys: Sequence[str]) -> int | None:
    for k in keys:
        v = attrs.get(k)
        if v is not None and (n := _int(v)) is not None:
            return n
    return None


def _tokens(a: Mapping[str, Any], p: _Keys) -> tuple[int | None, int | None, int | None]:
    """(input incl. cached, output, cached). Langfuse's `input` excludes cached: they are added."""
    in_tok = _first_int(a, p.in_tokens) if p.in_tokens else None
    out_tok = _first_int(a, p.out_tokens) if p.out_tokens else None
    cached = _first_int(a, p.cached) if p.cached else None
    usage = json_obj(a.get("langfuse.observation.usage_details")) if p.usage else None
    if usage is not None:
        if in_tok is None:
            in_tok = _first_int(usage, ("prompt_tokens", "input_tokens"))
        lf_cached = _first_int(usage, ("input_cached_tokens", "cache_read_input_tokens",
                                       "cached_tokens", "input_cache_read"))  # fmt: skip
        if in_tok is None and _int(usage.get("input")) is not None:
            parts = [_int(v) or 0 for k, v in usage.items() if k.startswith("input_")]
            in_tok = min(_MAX_TOKENS, (_int(usage["input"]) or 0) + sum(parts))
        if out_tok is None:
            out_tok = _first_int(usage, ("output", "completion_tokens", "output_tokens"))
        cached = cached if cached is not None else lf_cached
    if in_tok is None and out_tok is not None and p.totals:
        total = _first_int(a, p.totals)
        if total is not None and total >= out_tok:
            in_tok = total - out_tok
    if cached is not None and in_tok is not None:
        cached = min(cached, in_tok)
    return in_tok, out_tok, cached


def _explicit_cost(a: Mapping[str, Any], p: _Keys) -> Decimal | None:
    for k in p.cost:
        v = a.get(k)
        if v is not None and (d := _decimal(v)) is not None:
            return d
    raw = a.get("langfuse.observation.cost_details") if p.cost_details else None
    details = json_obj(raw) if raw is not None else None
    return _decimal(details.get("total")) if details is not None else None


def _decimal(v: Any) -> Decimal | None:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return None
    try:
        d = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
    except ArithmeticError:
        return None
    except ValueError:
        return None
    return d if d.is_finite() and Decimal(0) <= d <= _MAX_COST_USD else None


def _cost(
    a: Mapping[str, Any], p: _Keys, kind: str, model: str | None, served: str | None,
    in_tok: int | None, out_tok: int | None, cached: int | None, prices: PriceTable,
) -> tuple[int | None, bool]:  # fmt: skip
    """(cost in nano-USD, cost_unknown). An explicit cost attribute wins over the table."""
    explicit = _explicit_cost(a, p) if p.cost or p.cost_details else None
    if explicit is not None:
        return usd_to_nusd(explicit), False
    if in_tok is None and out_tok is None:
        # an LLM span with no usage at all cannot be priced; other spans cost nothing
        return None, kind in ("llm", "embedding")
    for m in (served, model):
        if m:
            c = prices.cost_nusd(m, in_tok or 0, out_tok or 0, cached or 0)
            if c is not None:
                return c, False
    return None, True


def _status(span: OtlpSpan) -> tuple[str, str | None]:
    if span.status_code == STATUS_OK:
        return "ok", None
    if span.status_code != STATUS_ERROR:
        return "unset", None
    message = span.status_message.strip()
    if not message:
        for ev in span.events:
            if ev.name == "exception":
                etype = as_text(ev.attributes.get("exception.type")) or "exception"
                emsg = as_text(ev.attributes.get("exception.message")) or ""
                message = f"{etype}: {emsg}" if emsg else etype
                break
    return "error", message or "error"


def _time(ns: int, span: OtlpSpan, which: str) -> datetime:
    if not isinstance(ns, int) or isinstance(ns, bool) or not 0 < ns <= _MAX_NS:
        raise BadRequestError(
            f"span {span.span_id} of trace {span.trace_id}: {which} time {ns!r} is not a "
            "Unix time in nanoseconds"
        )
    return _EPOCH + _MICROSECOND * (ns // 1000)


def _ttft(a: Mapping[str, Any]) -> float | None:
    v = a.get("tether.ttft_ms")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1e9:
        return float(v)
    return None


def _input(span: OtlpSpan, kind: str, p: _Keys) -> tuple[str | None, str | None]:
    """(the attribute it came from, the text) of a span's input."""
    a = span.attributes
    for k in p.inputs:
        if text := as_text(a[k]):
            return k, text
    for prefix in p.indexed_in:
        if text := _indexed_messages(a, prefix):
            return None, text
    if span.events:
        text = _event_messages(span, ("gen_ai.content.prompt",), "gen_ai.prompt", input_side=True)
        if text:
            return None, text
    if kind == "tool" and p.tool_parameters and (text := as_text(a.get("tool.parameters"))):
        return "tool.parameters", text
    return None, None


def _output(span: OtlpSpan, kind: str, p: _Keys) -> tuple[str | None, str | None]:
    a = span.attributes
    for k in p.outputs:
        if text := as_text(a[k]):
            return k, text
    for prefix in p.indexed_out:
        if text := _indexed_messages(a, prefix):
            return None, text
    if not span.events:
        return None, None
    text = _event_messages(span, ("gen_ai.content.completion",), "gen_ai.completion",
                           input_side=False)  # fmt: skip
    return None, text


def _indexed_messages(a: Mapping[str, Any], prefix: str) -> str | None:
    """`gen_ai.prompt.0.role` / `llm.input_messages.0.message.content` -> a JSON message list."""
    found: dict[int, dict[str, Any]] = {}
    for key, value in a.items():
        if not key.startswith(prefix):
            continue
        index, _, rest = key[len(prefix) :].partition(".")
        if not index.isdigit() or len(index) > 6:
            continue
        rest = rest.removeprefix("message.")
        if rest in ("role", "content"):
            found.setdefault(int(index), {})[rest] = as_text(value)
    if not found:
        return None
    return as_text([found[i] for i in sorted(found)])


def _event_messages(
    span: OtlpSpan, content_events: tuple[str, ...], attr: str, *, input_side: bool
) -> str | None:
    """Legacy `gen_ai.content.*` events, or per-message `gen_ai.*.message` / `gen_ai.choice`."""
    messages: list[Any] = []
    for ev in span.events:
        if ev.name in content_events and (text := as_text(ev.attributes.get(attr))):
            return text
        is_input = ev.name.startswith("gen_ai.") and ev.name.endswith(".message")
        is_output = ev.name == "gen_ai.choice"
        if (input_side and is_input) or (not input_side and is_output):
            body = {k: v for k, v in ev.attributes.items() if not k.startswith("gen_ai.system")}
            messages.append({"event": ev.name, **body})
    return as_text(messages) if messages else None


def _attribution(a: Mapping[str, Any], res: Mapping[str, Any]) -> RunAttribution:
    fields: dict[str, str | None] = {}
    for name, keys in _ATTRIBUTION_KEYS.items():
        value = None
        for k in keys:
            v = a.get(k)
            if v is None and res:
                v = res.get(k)
            if v is None or isinstance(v, bool) or not isinstance(v, str | int):
                continue
            text = str(v).strip()
            if text and not (k == "service.name" and text.startswith("unknown_service")):
                value = clean_text(text, 200)
                break
        fields[name] = value
    return RunAttribution(**fields)
