"""Console sessions: an HMAC-signed cookie naming the API key that logged in, its role and a
CSRF token; the signing key comes from settings or is generated once into $TETHER_HOME."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from fastapi import Depends, Form, Header, Request
from sqlalchemy import select

from tether.core.key_policy import KeyTimes, refusal
from tether.server.deps import State, get_state
from tether.store.engine import reading
from tether.store.tables import api_keys

COOKIE = "tether_session"
LOGIN_CSRF_COOKIE = "tether_login_csrf"
SESSION_TTL_S = 12 * 3600
_LIVE_CACHE_S = 5.0

Role = Literal["admin", "read"]


class LoginRequiredError(Exception):
    """Raised by page dependencies; the console turns it into a redirect to /login."""


class ConsoleForbiddenError(Exception):
    """A read-only session tried to change something, or a form's CSRF token did not match."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Viewer:
    """The person behind a console session."""

    key_id: str
    role: Role
    csrf: str
    name: str | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> str:
        return f"console:{self.key_id}"


def role_for_scopes(scopes: tuple[str, ...] | frozenset[str]) -> Role | None:
    """admin keys administer; read keys look; ingest/agent keys cannot open the console."""
    if "admin" in scopes:
        return "admin"
    if "read" in scopes:
        return "read"
    return None


def secret_key(state: State) -> bytes:
    """settings.secret_key, else $TETHER_HOME/secret_key (created with mode 0600 on first use)."""
    if state.console_secret is not None:
        return state.console_secret
    if state.settings.secret_key:
        key = state.settings.secret_key.encode()
    else:
        key = _home_secret(state.settings.home / "secret_key")
    state.console_secret = key
    return key


def _home_secret(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    # O_EXCL: when two workers start together, one writes and the other reads its value
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return value


def same_token(a: str, b: str) -> bool:
    """Constant-time equality of two tokens from a request. hmac.compare_digest refuses
    non-ASCII str (TypeError, a 500): compare their UTF-8 bytes instead."""
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


def _sign(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def encode_session(state: State, viewer: Viewer, *, now: float | None = None) -> str:
    payload = {
        "k": viewer.key_id,
        "r": viewer.role,
        "c": viewer.csrf,
        "n": viewer.name,
        "e": int((now or time.time()) + SESSION_TTL_S),
    }
    body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode())
    return body.decode() + "." + _sign(secret_key(state), body)


def decode_session(state: State, value: str, *, now: float | None = None) -> Viewer | None:
    """The Viewer in a cookie value, or None when it is forged, malformed or expired."""
    body, _, sig = value.partition(".")
    if not body or not same_token(
        _sign(secret_key(state), body.encode("utf-8", "surrogatepass")), sig
    ):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(body.encode()))
        if data["e"] < (now or time.time()) or data["r"] not in ("admin", "read"):
            return None
        return Viewer(key_id=data["k"], role=data["r"], csrf=data["c"], name=data.get("n"))
    except (ValueError, KeyError, TypeError):
        return None


def new_viewer(key_id: str, role: Role, name: str | None) -> Viewer:
    return Viewer(key_id=key_id, role=role, csrf=secrets.token_urlsafe(24), name=name)


def _key_still_live(state: State, key_id: str) -> bool:
    """A revoked or expired key's sessions end within a few seconds."""
    cache = state.console_live_keys
    now = time.monotonic()
    hit = cache.get(key_id)
    if hit is not None and now - hit[0] < _LIVE_CACHE_S:
        return hit[1]
    k = api_keys.c
    with reading(state.engine) as conn:
        row = conn.execute(
            select(k.created_at, k.expires_at, k.replaced_by).where(
                k.id == key_id, k.revoked_at.is_(None)
            )
        ).first()
    # an expired key, or one past the rotation policy, ends its sessions too
    live = row is not None and refusal(
        KeyTimes(key_id, row.created_at, row.expires_at, row.replaced_by),
        max_age_days=state.settings.keys.max_age_days, now=datetime.now(UTC),
    ) is None  # fmt: skip
    if len(cache) > 10_000:
        cache.clear()
    cache[key_id] = (now, live)
    return live


def viewer(request: Request, state: State = Depends(get_state)) -> Viewer:
    """Dependency of every page: the logged-in Viewer, or a redirect to the login page."""
    raw = request.cookies.get(COOKIE)
    found = decode_session(state, raw) if raw else None
    if found is None or not _key_still_live(state, found.key_id):
        raise LoginRequiredError()
    request.state.viewer = found
    return found


def checked_viewer(
    request: Request,
    csrf: str = Form(""),
    x_csrf_token: str = Header(""),
    who: Viewer = Depends(viewer),
) -> Viewer:
    """Dependency of every form POST: a session whose CSRF token matches the form's."""
    sent = csrf or x_csrf_token
    if not sent or not same_token(sent, who.csrf):
        raise ConsoleForbiddenError(
            "the form's security token did not match your session; reload the page and try again"
        )
    return who


def admin_viewer(who: Viewer = Depends(checked_viewer)) -> Viewer:
    """Dependency of actions that change things: an admin session with a valid CSRF token."""
    if not who.is_admin:
        raise ConsoleForbiddenError(
            "your key is read-only; log in with an admin key to approve, deny or kill"
        )
    return who
