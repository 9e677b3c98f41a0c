"""The OpenAPI document at /api/v1/openapi.json: explicit operation ids, and every error response
documented with the one error body (`{"error": {type, code, message, details?}}`).

Routes declare the errors particular to them with `responses=errors(404, 409)`; the ones every
operation can answer are added here: 400 (tether answers bad parameters with 400, never
FastAPI's 422), 401 and 403 (every route needs a key with a scope), 404 for a path naming a
resource, 413 for a body over `max_request_bytes`. tests/server/test_openapi_fuzz.py checks
with schemathesis that no response falls outside what is documented.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel


class ErrorDetail(BaseModel):
    type: str
    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorOut(BaseModel):
    """Every error of the REST API and OTLP ingest."""

    error: ErrorDetail


DESCRIPTIONS: dict[int, str] = {
    400: "invalid_request: the message names the parameter or field and the problem",
    401: "unauthenticated: missing, invalid or revoked API key",
    402: "budget_exceeded: the call's worst case does not fit the budget that is left",
    403: "permission_denied: the key lacks the scope, or speaks for another agent",
    404: "not_found: no such resource",
    409: "conflict: the resource is not in a state that allows this (already decided, ended)",
    413: "payload_too_large: the body is over max_request_bytes",
    415: "unsupported media type",
    429: "rate_limited: retry after the Retry-After header's seconds",
    503: "unavailable: a dependency (database, upstream) does not answer",
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: these status codes with the error body."""
    return {code: {"model": ErrorOut, "description": DESCRIPTIONS[code]} for code in codes}


def install(app: FastAPI) -> None:
    """Serves the document with explicit operation ids and the common errors documented."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)  # fmt: skip
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorDetail", ErrorDetail.model_json_schema())
        components["ErrorOut"] = {
            "title": "ErrorOut", "type": "object", "required": ["error"],
            "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}},
        }  # fmt: skip
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        taken = {op.get("operationId") for item in schema.get("paths", {}).values()
                 for op in item.values()}  # fmt: skip
        for path, item in schema.get("paths", {}).items():
            for method, op in item.items():
                _name_operation(path, method, op, taken)
                _document_errors(path, method, op)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _name_operation(path: str, method: str, op: dict[str, Any], taken: set[Any]) -> None:
    """FastAPI's default id is `<function>_<path>_<method>` (list_runs_api_v1_runs_get); the
    id is the route function's name (list_runs), unless a route gave its own or it is taken
    (tests/server/test_openapi_fuzz.py then fails: rename the function)."""
    default: str = op.get("operationId", "")
    suffix = re.sub(r"\W", "_", path) + "_" + method
    if default.endswith(suffix) and len(default) > len(suffix):
        short = default[: -len(suffix)]
        if short not in taken:
            taken.add(short)
            op["operationId"] = short


def _document_errors(path: str, method: str, op: dict[str, Any]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    responses.pop("422", None)
    common = [400, 401, 403]
    if "{" in path:
        common.append(404)
    if method in ("post", "put", "patch"):
        common.append(413)
    for code in common:
        responses.setdefault(str(code), {"description": DESCRIPTIONS[code]})
    for status, response in responses.items():
        if status.isdigit() and int(status) >= 400:
            response.setdefault("description", DESCRIPTIONS.get(int(status), "error"))
            response["content"] = {"application/json": {"schema": _ERROR_REF}}
