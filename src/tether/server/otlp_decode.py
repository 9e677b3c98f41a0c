"""OTLP/HTTP trace payloads -> OtlpSpan: protobuf and OTLP/JSON (hex ids, camelCase), gzip.

Every problem becomes a BadRequestError (400) or PayloadTooLargeError (413) naming the cause.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tether.core.errors import BadRequestError, PayloadTooLargeError
from tether.core.semconv import OtlpSpan, SpanEvent

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_MAX_DEPTH = 16


def media_type(content_type: str | None) -> str:
    """`protobuf` or `json` for a Content-Type header; anything else is a 400."""
    base = (content_type or "").split(";")[0].strip().lower()
    if base in (PROTOBUF, "application/protobuf", "application/vnd.google.protobuf"):
        return "protobuf"
    if base == JSON:
        return "json"
    raise BadRequestError(
        f"unsupported Content-Type {content_type!r}: send OTLP as {PROTOBUF} or {JSON}",
        code="unsupported_media_type",
    )


def decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body without its Content-Encoding, refusing output over `max_bytes` (zip bombs)."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif enc == "deflate":
        d = zlib.decompressobj()
    else:
        raise BadRequestError(
            f"unsupported Content-Encoding {encoding!r}: use gzip, deflate or none",
            code="unsupported_encoding",
        )
    try:
        out = d.decompress(body, max_bytes + 1)
        if len(out) > max_bytes:
            raise PayloadTooLargeError(
                f"decompressed request body over {max_bytes} bytes; send smaller batches"
            )
        if not d.eof:
            raise BadRequestError(f"truncated {enc} body: the compressed stream does not end")
    except zlib.error as exc:
        raise BadRequestError(f"body is not valid {enc}: {exc}") from None
    return out


def parse_request(body: bytes, kind: str) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    if kind == "protobuf":
        try:
            req.ParseFromString(body)
        except DecodeError as exc:
            raise BadRequestError(f"body is not an OTLP ExportTraceServiceRequest: {exc}") from None
        return req
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequestError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequestError("OTLP/JSON body must be an object with `resourceSpans`")
    _hex_ids_to_base64(data)
    try:
        json_format.ParseDict(data, req, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise BadRequestError(f"body is not OTLP/JSON: {exc}") from None
    return req


def _hex_ids_to_base64(data: dict[str, Any]) -> None:
    """OTLP/JSON writes ids as hex, protobuf's JSON mapping expects base64 for bytes."""
    for ri, rs in enumerate(_list(data, "resourceSpans", "resource_spans")):
        for si, ss in enumerate(_list(rs, "scopeSpans", "scope_spans")):
            for pi, span in enumerate(_list(ss, "spans")):
                where = f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"
                _convert(span, where, ("traceId", "trace_id", "spanId", "span_id",
                                       "parentSpanId", "parent_span_id"))  # fmt: skip
                for li, link in enumerate(_list(span, "links")):
                    _convert(link, f"{where}.links[{li}]",
                             ("traceId", "trace_id", "spanId", "span_id"))  # fmt: skip


def _list(obj: Any, *names: str) -> list[Any]:
    if not isinstance(obj, dict):
        return []
    for n in names:
        v = obj.get(n)
        if isinstance(v, list):
            return v
    return []


def _convert(obj: Any, where: str, keys: tuple[str, ...]) -> None:
    if not isinstance(obj, dict):
        return
    for k in keys:
        v = obj.get(k)
        if isinstance(v, str):
            try:
                obj[k] = base64.b64encode(bytes.fromhex(v)).decode()
            except ValueError:
                raise BadRequestError(f"{where}.{k}: {v!r} is not a hex id") from None


def response_body(kind: str) -> tuple[bytes, str]:
    resp = ExportTraceServiceResponse()
    if kind == "protobuf":
        return resp.SerializeToString(), PROTOBUF
    return json_format.MessageToJson(resp).encode(), JSON


def to_spans(req: ExportTraceServiceRequest) -> list[OtlpSpan]:
    """Flattens a request to OtlpSpans, checking ids so that nothing unstorable gets through."""
    out: list[OtlpSpan] = []
    append = out.append
    for ri, rs in enumerate(req.resource_spans):
        resource = attributes(rs.resource.attributes)
        for si, ss in enumerate(rs.scope_spans):
            for pi, s in enumerate(ss.spans):
                trace_id, span_id, parent = s.trace_id, s.span_id, s.parent_span_id
                # the common case checked inline; a bad id is named by _id (the hot path)
                if not (
                    len(trace_id) == 16
                    and len(span_id) == 8
                    and any(trace_id)
                    and any(span_id)
                    and (not parent or (len(parent) == 8 and any(parent)))
                ):
                    where = f"resource_spans[{ri}].scope_spans[{si}].spans[{pi}]"
                    _id(trace_id, 16, where, "trace_id")
                    _id(span_id, 8, where, "span_id")
                    if parent:
                        _id(parent, 8, where, "parent_span_id")
                events, status = s.events, s.status
                # the tuple built directly, fields in OtlpSpan's order: its keyword __new__
                # costs a Python call per span
                append(_tuple_new(OtlpSpan, (
                    trace_id.hex(), span_id.hex(), s.name, s.start_time_unix_nano,
                    s.end_time_unix_nano, parent.hex() if parent else None,
                    attributes(s.attributes), resource, status.code, status.message,
                    [SpanEvent(e.name, e.time_unix_nano, attributes(e.attributes))
                     for e in events] if events else (),
                )))  # fmt: skip
    return out


_tuple_new = tuple.__new__
_OTLP_SPAN_FIELDS = ("trace_id", "span_id", "name", "start_ns", "end_ns", "parent_id",
                     "attributes", "resource", "status_code", "status_message",
                     "events")  # fmt: skip
if OtlpSpan._fields != _OTLP_SPAN_FIELDS:
    raise RuntimeError("to_spans builds OtlpSpan tuples in an older field order")


def _id(raw: bytes, size: int, where: str, field: str) -> str:
    if len(raw) != size or not any(raw):
        raise BadRequestError(
            f"{where}.{field}: must be {size} bytes and not all zero, got {len(raw)} bytes"
        )
    return raw.hex()


def attributes(kvs: Any) -> dict[str, Any]:
    # A non-empty string or non-zero integer can only be the oneof's value; reading it costs a
    # tenth of WhichOneof, which only the rest (empty, zero, other types) pay.
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        if s := v.string_value:
            out[kv.key] = s
        elif i := v.int_value:
            out[kv.key] = i
        else:
            out[kv.key] = any_value(v)
    return out


def any_value(v: AnyValue, depth: int = 0) -> Any:
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        return v.double_value
    if which == "bool_value":
        return v.bool_value
    if which == "bytes_value":
        return v.bytes_value
    if depth >= _MAX_DEPTH:
        return None
    if which == "array_value":
        return [any_value(x, depth + 1) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value, depth + 1) for kv in v.kvlist_value.values}
    return None


__all__ = [
    "JSON",
    "PROTOBUF",
    "attributes",
    "decompress",
    "media_type",
    "parse_request",
    "response_body",
    "to_spans",
]
