"""Mounts the MCP gateway at /mcp: bearer-key authentication in front of the official SDK's
Streamable HTTP session manager, started and stopped with the app (state.lifespans).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tether.core.errors import AuthenticationError, PermissionDeniedError, TetherError, error_body
from tether.core.principal import Principal
from tether.gateway.mcp.proxy import PRINCIPAL_KEY, Gateway

SESSION_IDLE_TIMEOUT_S = 30 * 60

# The server's key check: the Principal behind a request's bearer key, or AuthenticationError.
Authenticate = Callable[[Request], Awaitable[Principal]]


class McpEndpoint:
    """ASGI app for /mcp: only keys that speak for an agent (`--agent NAME`) get through."""

    def __init__(self, authenticate: Authenticate) -> None:
        self.authenticate = authenticate
        self.manager: StreamableHTTPSessionManager | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        try:
            principal = await self.authenticate(request)
            if not principal.has("agent") or not principal.agent:
                # the policy that governs the calls is the agent's: a key must name one
                raise PermissionDeniedError(
                    "the MCP gateway needs an agent's key: create one with "
                    "`tether keys create --agent NAME --scopes agent`"
                )
        except TetherError as exc:
            status = 401 if isinstance(exc, AuthenticationError) else exc.http_status
            response = JSONResponse(error_body(exc.type, exc.message), status_code=status,
                                    headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
            await response(scope, receive, send)
            return
        if self.manager is None:
            response = JSONResponse(error_body("unavailable", "the MCP gateway is starting"), 503)
            await response(scope, receive, send)
            return
        scope[PRINCIPAL_KEY] = principal
        # Binds a (legacy, stateful) MCP session to the key that opened it: the SDK answers 404
        # to a request for that session made with another key.
        token = AccessToken(token=principal.key_id, client_id=principal.key_id,
                            scopes=sorted(principal.scopes))  # fmt: skip
        scope["user"] = AuthenticatedUser(token)
        await self.manager.handle_request(scope, receive, send)


def mount(
    app: FastAPI,
    gateway: Gateway,
    authenticate: Authenticate,
    lifespans: list[Callable[[], AbstractAsyncContextManager[Any]]],
) -> None:
    """Adds the /mcp route, and to `lifespans` the one that connects upstreams and runs the
    sessions."""
    endpoint = McpEndpoint(authenticate)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        # A session manager runs once; a new one per app start keeps test apps restartable.
        manager = StreamableHTTPSessionManager(
            app=gateway.server, session_idle_timeout=SESSION_IDLE_TIMEOUT_S
        )
        async with gateway.running(), manager.run():
            endpoint.manager = manager
            try:
                yield
            finally:
                endpoint.manager = None

    lifespans.append(lifespan)
    app.router.routes.append(
        Route("/mcp", endpoint=endpoint, methods=["GET", "POST", "DELETE"], include_in_schema=False)
    )
