"""The checkpoint lane: the three routes LangGraph's saver calls every super-step (`put`,
`put_writes`, `get_tuple`) dispatched straight to their endpoint functions.

FastAPI's router tries every route of the app in turn and its dependency solver runs per
request; together they cost more CPU than the checkpoint statements themselves (py-spy on
`tether serve` under bench/checkpoints.py). Here the path picks the endpoint, the body is
validated by the route's own pydantic model (`model_validate_json`), the key is taken from the
cache `require()` fills (no I/O), and the endpoint runs as FastAPI would run it: same code, same
fast and general paths, same errors (TetherErrors rendered by server/errors.py's function).

Whatever the lane does not take as is goes to FastAPI unchanged, body and all: a key not in the
cache, a missing scope, a body or query the model refuses (FastAPI words the 400), another
content type. Nothing has run at that point, so the answer is exactly FastAPI's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.core.errors import TetherError
from tether.core.principal import Principal
from tether.server.auth import cached_principal
from tether.server.deps import State
from tether.server.errors import tether_error_response
from tether.server.routes import checkpoints as routes

log = logging.getLogger("tether.server")

PREFIX = "/api/v1"
Handler = Callable[[State, Principal, Scope, bytes], Awaitable[Response | None]]


async def _put(state: State, principal: Principal, scope: Scope, body: bytes) -> Response | None:
    if not principal.has("agent"):
        return None
    parsed = routes.CheckpointIn.model_validate_json(body)
    out = await routes.put_checkpoint(parsed, state=state, principal=principal)
    return JSONResponse(out)


async def _writes(state: State, principal: Principal, scope: Scope, body: bytes) -> Response | None:
    if not principal.has("agent"):
        return None
    parsed = routes.WritesIn.model_validate_json(body)
    return await routes.put_writes(parsed, state=state, principal=principal)


# the query of GET /checkpoints/tuple and the bounds its route declares
_TUPLE_QUERY = {"thread_id": (1, 200), "checkpoint_ns": (0, 200), "checkpoint_id": (0, 64)}


async def _tuple(state: State, principal: Principal, scope: Scope, body: bytes) -> Response | None:
    if not (principal.has("agent") or principal.has("read")):
        return None
    query: dict[str, str] = {}
    for key, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
        bounds = _TUPLE_QUERY.get(key)
        if bounds is None or key in query or not bounds[0] <= len(value) <= bounds[1]:
            return None  # FastAPI decides what an odd query means
        query[key] = value
    if "thread_id" not in query:
        return None
    return await routes.get_tuple(
        thread_id=query["thread_id"],
        checkpoint_ns=query.get("checkpoint_ns", ""),
        checkpoint_id=query.get("checkpoint_id"),
        state=state,
        principal=principal,
    )


_ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", PREFIX + "/checkpoints"): _put,
    ("POST", PREFIX + "/checkpoints/writes"): _writes,
    ("GET", PREFIX + "/checkpoints/tuple"): _tuple,
}


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


class CheckpointLane:
    """ASGI middleware in front of the app's router (inside its error and size limits)."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = _ROUTES.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        if handler is None or (scope["method"] == "POST" and not _json_body(scope)):
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
        response = await self._answer(handler, scope, body)
        if response is None:
            await self.app(scope, _replay(body, receive), send)
        else:
            await response(scope, receive, send)

    async def _answer(self, handler: Handler, scope: Scope, body: bytes) -> Response | None:
        principal = cached_principal(self.state, _secret(scope))
        if principal is None:
            return None
        try:
            return await handler(self.state, principal, scope, body)
        except ValidationError:
            return None  # nothing ran; FastAPI's answer words the 400
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


__all__ = ["CheckpointLane"]
