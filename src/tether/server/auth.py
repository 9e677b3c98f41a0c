"""Bearer-key authentication with scopes; keys are looked up by hash and cached briefly, and
refused once expired or past the rotation policy (core/key_policy.py)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import anyio
from fastapi import Depends, Request

from tether.core.errors import AuthenticationError, PermissionDeniedError, TetherError
from tether.core.key_policy import refusal
from tether.core.loopback import is_loopback
from tether.core.principal import Principal
from tether.server.deps import State, get_state
from tether.store import keys as key_store

_CACHE_TTL_S = 5.0

__all__ = [
    "Principal",
    "authenticate",
    "authenticate_async",
    "bearer_secret",
    "cached_principal",
    "is_loopback",
    "request_authenticator",
    "require",
]


def bearer_secret(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    # The Anthropic SDK sends its key as x-api-key.
    return request.headers.get("x-api-key") or None


def authenticate(state: State, secret: str | None) -> Principal:
    """The Principal behind `secret`, or AuthenticationError with what to do about it."""
    if not secret:
        raise AuthenticationError(
            "missing API key: send `Authorization: Bearer <key>` (create one with "
            "`tether keys create`)"
        )
    cache = state.key_cache
    now = time.monotonic()
    hit = cache.get(secret)
    if hit is not None and now - hit[0] < _CACHE_TTL_S:
        principal, key = hit[1], hit[2]
    else:
        key = key_store.find_by_secret(state.engine, secret)
        principal = Principal(key.id, frozenset(key.scopes), key.agent) if key else None
        if len(cache) > 10_000:
            cache.clear()
        cache[secret] = (now, principal, key)
    if principal is None or key is None:
        raise AuthenticationError("invalid or revoked API key")
    max_age = state.settings.keys.max_age_days
    if key.expires_at is not None or max_age is not None:
        refused = refusal(key.times(), max_age_days=max_age, now=datetime.now(UTC))
        if refused is not None:
            raise refused
    return principal


def request_authenticator(state: State) -> Callable[[Request], Awaitable[Principal]]:
    """The async key check handed to the gateways: a cached key costs no thread hop."""

    async def authenticate_request(request: Request) -> Principal:
        return await authenticate_async(state, bearer_secret(request))

    return authenticate_request


async def authenticate_async(state: State, secret: str | None) -> Principal:
    """`authenticate` from async code: a key checked in the last few seconds costs no thread
    hop (no I/O); any other goes to the database on a worker thread."""
    hit = state.key_cache.get(secret) if secret else None
    if hit is not None and time.monotonic() - hit[0] < _CACHE_TTL_S:
        return authenticate(state, secret)  # a cache hit: no I/O
    return await anyio.to_thread.run_sync(authenticate, state, secret)


def cached_principal(state: State, secret: str | None) -> Principal | None:
    """The Principal behind `secret` if the key cache holds it and it is still valid, at no
    I/O; None otherwise (then `require` looks it up, and words any refusal)."""
    hit = state.key_cache.get(secret) if secret else None
    if hit is None or time.monotonic() - hit[0] >= _CACHE_TTL_S:
        return None
    try:
        return authenticate(state, secret)
    except TetherError:
        return None


def forget_cached_keys(state: State) -> None:
    """Called after a revoke so the key stops working at once in this process."""
    state.key_cache.clear()


def require(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller must hold one of `scopes` (admin holds them all)."""

    async def dependency(request: Request, state: State = Depends(get_state)) -> Principal:
        principal = await authenticate_async(state, bearer_secret(request))
        if scopes and not any(principal.has(s) for s in scopes):
            raise PermissionDeniedError(
                f"this key lacks the scope {' or '.join(scopes)} needed for {request.url.path}"
            )
        request.state.principal = principal
        return principal

    return dependency
