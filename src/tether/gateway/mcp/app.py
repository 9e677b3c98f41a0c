"""Mounts the MCP gateway at /mcp: bearer-key authentication in front of the official SDK's
Streamable HTTP session manager, run with the app (state.lifespans).

The SDK (its server, client and auth halves: ~25 MB of server RSS and about 400 modules) loads
when the gateway is first needed: at start-up when upstream MCP servers are configured (they
connect, and their tools are registered, before tether says it is ready), otherwise at the first
/mcp request, which waits for it. A server that only ingests traces never loads it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tether.core.errors import AuthenticationError, PermissionDeniedError, TetherError, error_body
from tether.core.principal import Principal
from tether.gateway.mcp.spans import PRINCIPAL_KEY

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from tether.gateway.mcp.proxy import Gateway

log = logging.getLogger("tether.mcp")

SESSION_IDLE_TIMEOUT_S = 30 * 60
# What the gateway needs of the SDK, imported in a worker thread so the event loop keeps serving
# while it loads (a second or more on a busy machine).
SDK_MODULES = (
    "mcp.server.streamable_http_manager",
    "mcp.server.auth.middleware.bearer_auth",
    "mcp.server.auth.provider",
    "tether.gateway.mcp.proxy",
)

# The server's key check: the Principal behind a request's bearer key, or AuthenticationError.
Authenticate = Callable[[Request], Awaitable[Principal]]


def _load_sdk() -> None:
    for name in SDK_MODULES:
        importlib.import_module(name)


class McpEndpoint:
    """ASGI app for /mcp: only keys that speak for an agent (`--agent NAME`) get through.

    `running()` (a lifespan) runs the gateway `build` makes: at once when `eager`, otherwise
    from the first authenticated request; one start at a time, and a start that fails is logged
    and tried again by the next request."""

    def __init__(self, authenticate: Authenticate, build: Callable[[], Gateway], *,
                 eager: bool) -> None:  # fmt: skip
        self.authenticate = authenticate
        self.build = build
        self.eager = eager
        self.manager: StreamableHTTPSessionManager | None = None
        self._tasks: anyio.abc.TaskGroup | None = None  # the lifespan's, while it runs
        self._starting: anyio.Lock | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            self._tasks, self._starting = tg, anyio.Lock()
            if self.eager:
                await tg.start(self._serve)  # a failure here fails the start, as it should
            try:
                yield
            finally:
                self._tasks = None
                tg.cancel_scope.cancel()

    async def _serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Builds the gateway and runs it (its upstreams, the SDK's sessions) until cancelled."""
        await anyio.to_thread.run_sync(_load_sdk)
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        gateway = self.build()
        # A session manager runs once; a new one per app start keeps test apps restartable.
        manager = StreamableHTTPSessionManager(
            app=gateway.server, session_idle_timeout=SESSION_IDLE_TIMEOUT_S
        )
        async with gateway.running(), manager.run():
            self.manager = manager
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self.manager = None

    async def _started(self) -> StreamableHTTPSessionManager | None:
        """The running session manager, starting the gateway first if nothing has yet."""
        if self.manager is not None or self._tasks is None or self._starting is None:
            return self.manager
        async with self._starting:
            if self.manager is None and self._tasks is not None:
                try:
                    await self._tasks.start(self._serve)
                except Exception:  # the request's boundary: it gets a 503, the next one retries
                    log.exception("the MCP gateway failed to start")
        return self.manager

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
        manager = await self._started()
        if manager is None:
            response = JSONResponse(error_body("unavailable", "the MCP gateway is starting"), 503)
            await response(scope, receive, send)
            return
        scope[PRINCIPAL_KEY] = principal
        scope["user"] = _session_user(principal)
        await manager.handle_request(scope, receive, send)


def _session_user(principal: Principal) -> Any:
    """Binds a (legacy, stateful) MCP session to the key that opened it: the SDK answers 404
    to a request for that session made with another key."""
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
    from mcp.server.auth.provider import AccessToken

    token = AccessToken(token=principal.key_id, client_id=principal.key_id,
                        scopes=sorted(principal.scopes))  # fmt: skip
    return AuthenticatedUser(token)


def mount(
    app: FastAPI,
    build: Callable[[], Gateway],
    authenticate: Authenticate,
    lifespans: list[Callable[[], AbstractAsyncContextManager[Any]]],
    *,
    eager: bool,
) -> McpEndpoint:
    """Adds the /mcp route, and to `lifespans` the one that runs the gateway `build` makes
    (connecting its upstreams): at start-up when `eager`, else from the first /mcp request."""
    endpoint = McpEndpoint(authenticate, build, eager=eager)
    lifespans.append(endpoint.running)
    app.router.routes.append(
        Route("/mcp", endpoint=endpoint, methods=["GET", "POST", "DELETE"], include_in_schema=False)
    )
    return endpoint
