"""The only place where exceptions become HTTP responses: `{"error": {type, code, message}}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tether.core.errors import TetherError, error_body

log = logging.getLogger("tether.server")

__all__ = ["error_body", "install", "tether_error_response"]


def tether_error_response(exc: TetherError) -> JSONResponse:
    """A TetherError as its HTTP answer (the checkpoint lane renders them without a router)."""
    headers = {}
    retry = exc.details.get("retry_after_s")
    if retry is not None:
        headers["Retry-After"] = str(max(1, int(retry)))
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status, headers=headers)


def install(app: FastAPI) -> None:
    """Registers the handlers; the LLM gateway renders its own OpenAI-shaped errors."""

    @app.exception_handler(TetherError)
    async def _tether(request: Request, exc: TetherError) -> JSONResponse:
        return tether_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err["loc"] if p != "body")
            parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
        return JSONResponse(error_body("invalid_request", "; ".join(parts)), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(
            error_body(type_, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal_error", "tether hit an unexpected error; see the server log"),
            status_code=500,
        )
