"""Login with an API key (read-only or admin role) and logout; double-submit CSRF on the form."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tether.core.key_policy import refusal
from tether.server.console.render import page
from tether.server.console.session import (
    COOKIE,
    LOGIN_CSRF_COOKIE,
    SESSION_TTL_S,
    Viewer,
    checked_viewer,
    decode_session,
    encode_session,
    new_viewer,
    role_for_scopes,
    same_token,
)
from tether.server.deps import State, get_state
from tether.store import keys as key_store

router = APIRouter()


def safe_next(value: str | None, default: str = "/") -> str:
    """Only same-site paths: "//evil.example" or "https://..." would be an open redirect."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


def _login_form(request: Request, *, error: str | None = None, status: int = 200) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    resp = page(request, "login.html", status_code=status, csrf=token, error=error,
                next=safe_next(request.query_params.get("next")))  # fmt: skip
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                    secure=request.url.scheme == "https", max_age=3600)  # fmt: skip
    return resp


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, state: State = Depends(get_state)) -> Response:
    raw = request.cookies.get(COOKIE)
    if raw and decode_session(state, raw) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return _login_form(request)


@router.post("/login")
async def login_submit(
    request: Request,
    api_key: str = Form(""),
    csrf: str = Form(""),
    next: str = Form("/"),
    state: State = Depends(get_state),
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not csrf or not same_token(expected, csrf):
        return _login_form(request, error="The form expired; please try again.", status=400)
    secret = api_key.strip()
    if not secret:
        return _login_form(request, error="Paste an API key.", status=400)
    key = await run_in_threadpool(key_store.find_by_secret, state.engine, secret)
    if key is None:
        return _login_form(request, error="That key is unknown or revoked.", status=401)
    refused = refusal(key.times(), max_age_days=state.settings.keys.max_age_days,
                      now=datetime.now(UTC))  # fmt: skip
    if refused is not None:
        return _login_form(request, error=refused.message, status=401)
    role = role_for_scopes(tuple(key.scopes))
    if role is None:
        return _login_form(
            request,
            error=f"A key with scopes {', '.join(key.scopes)} cannot open the console; use a "
            "key with the read or admin scope (`tether keys create --scopes read`).",
            status=403,
        )
    viewer = new_viewer(key.id, role, key.name or key.prefix)
    resp = RedirectResponse(safe_next(next), status_code=303)
    resp.set_cookie(COOKIE, encode_session(state, viewer), httponly=True, samesite="lax",
                    secure=request.url.scheme == "https", max_age=SESSION_TTL_S)  # fmt: skip
    resp.delete_cookie(LOGIN_CSRF_COOKIE)
    return resp


@router.post("/logout")
def logout(who: Viewer = Depends(checked_viewer)) -> Response:
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(COOKIE)
    return resp
