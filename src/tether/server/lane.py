"""The API lane: a few hot routes dispatched straight to their endpoint functions, ahead of
FastAPI (the checkpoint saver's, server/checkpoint_lane.py; an eval attempt's finish,
server/eval_lane.py).

FastAPI's router tries every route of the app in turn and its dependency solver runs per
request; together they cost more CPU than the statements behind these routes (py-spy on
`tether serve` under bench/checkpoints.py and bench/evals.py). Here the path picks the endpoint,
the body is validated by the route's own pydantic model (`model_validate_json`), the key is taken
from the cache `require()` fills (no I/O), and the endpoint runs as FastAPI would run it: same
code, same fast and general paths, same errors (TetherErrors rendered by server/errors.py's
function).

Whatever the lane does not take as is goes to FastAPI unchanged, body and all: a key not in the
cache, a missing scope, a body, path or query the model refuses (FastAPI words the 4xx), another
content type. Nothing has run at that point, so the answer is exactly FastAPI's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.core.errors import TetherError
from tether.core.principal import Principal
from tether.server.auth import cached_principal
from tether.server.deps import State
from tether.server.errors import tether_error_response

log = logging.getLogger("tether.server")

PREFIX = "/api/v1"
# the endpoint's answer, or None: FastAPI answers instead (nothing has run yet)
Handler = Callable[[State, Principal, Scope, bytes, dict[str, str]], Awaitable[Response | None]]
# (method, path) -> handler; a path segment `{name}` matches any one segment, as Starlette's
# default convertor does, and reaches the handler as params[name]
Routes = Mapping[tuple[str, str], Handler]


def _secret(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            text = value.decode("latin-1")
            if text.lower().startswith("bearer "):
                return text[7:].strip() or None
            return None
    return None


def _json_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            media: bytes = value.split(b";")[0].strip().lower()
            return media == b"application/json"
    return False


class _Template:
    def __init__(self, path: str, handler: Handler) -> None:
        self.parts = path.split("/")
        self.handler = handler

    def match(self, path: str) -> dict[str, str] | None:
        parts = path.split("/")
        if len(parts) != len(self.parts):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self.parts, parts, strict=True):
            if want.startswith("{"):
                if not got:
                    return None
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params


class Lane:
    """ASGI middleware in front of the app's router (inside its error and size limits)."""

    def __init__(self, app: ASGIApp, state: State, routes: Routes) -> None:
        self.app = app
        self.state = state
        self.exact: dict[tuple[str, str], Handler] = {}
        self.templates: dict[str, list[_Template]] = {}
        for (method, path), handler in routes.items():
            if "{" in path:
                self.templates.setdefault(method, []).append(_Template(path, handler))
            else:
                self.exact[(method, path)] = handler

    def _find(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        handler = self.exact.get((method, path))
        if handler is not None:
            return handler, {}
        for template in self.templates.get(method, ()):
            params = template.match(path)
            if params is not None:
                return template.handler, params
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._find(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if found is None or (scope["method"] == "POST" and not _json_body(scope)):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        response = await self._answer(found, scope, body)
        if response is None:
            await self.app(scope, _replay(body, receive), send)
        else:
            await response(scope, receive, send)

    async def _answer(
        self, found: tuple[Handler, dict[str, str]], scope: Scope, body: bytes
    ) -> Response | None:
        principal = cached_principal(self.state, _secret(scope))
        if principal is None:
            return None
        handler, params = found
        try:
            return await handler(self.state, principal, scope, body, params)
        except ValidationError:
            return None  # nothing ran; FastAPI's answer words the 4xx
        except TetherError as exc:
            return tether_error_response(exc)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The request body once more, then whatever the client sends next (its disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


__all__ = ["PREFIX", "Handler", "Lane", "Routes"]
