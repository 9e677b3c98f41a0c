"""The web console: server-rendered pages (Jinja2 + htmx) at `/`, static assets at `/static`."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from tether.server.console import (
    approvals,
    costs,
    evals,
    governance,
    home,
    login,
    memory,
    redteam,
    run_detail,
    runs_list,
    watch,
)
from tether.server.console.render import STATIC_DIR, make_env, page
from tether.server.console.session import ConsoleForbiddenError, LoginRequiredError
from tether.server.deps import State


def install(app: FastAPI, state: State) -> None:
    """Mounts /static and every console page."""
    state.console_env = make_env()
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    for module in (login, home, runs_list, run_detail, approvals, costs, governance, memory, evals,
                   watch, redteam):  # fmt: skip
        app.include_router(module.router, include_in_schema=False)

    @app.exception_handler(LoginRequiredError)
    async def _login(request: Request, exc: LoginRequiredError) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        url = "/login?next=" + quote(target, safe="")
        if request.headers.get("hx-request"):
            # htmx follows HX-Redirect with a full page load instead of swapping a login form in
            return HTMLResponse("", status_code=200, headers={"HX-Redirect": url})
        return RedirectResponse(url, status_code=303)

    @app.exception_handler(ConsoleForbiddenError)
    async def _forbidden(request: Request, exc: ConsoleForbiddenError) -> HTMLResponse:
        if request.headers.get("hx-request"):
            return page(request, "fragments/flash.html", status_code=403,
                        kind="error", message=exc.message)  # fmt: skip
        return page(request, "error.html", status_code=403, title="Not allowed",
                    message=exc.message)  # fmt: skip
