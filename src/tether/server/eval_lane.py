"""The eval lane: an attempt's finish (which also starts the runner's next attempt, so it is the
one request `tether eval run` makes per attempt), served by the API lane (server/lane.py)
straight from its endpoint function; whatever it does not take as is reaches FastAPI unchanged.

The route and the dependency solver were about a tenth of the server's CPU per attempt
(py-spy on `tether serve` under bench/evals.py).
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from tether.core.principal import Principal
from tether.server.deps import State
from tether.server.lane import PREFIX, Routes
from tether.server.routes import evals as routes

# the bound finish_attempt declares on `attempt`, as AttemptStart's
_MAX_ATTEMPT = 10_000


def _attempt(text: str) -> int | None:
    """The path's attempt number in its plain form; anything else is FastAPI's to word."""
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or text[:1] == "0" != text:
        return None
    n = int(text)
    return n if n <= _MAX_ATTEMPT else None


async def _finish(
    state: State, principal: Principal, scope: Scope, body: bytes, params: dict[str, str]
) -> Response | None:
    if not principal.has("admin"):
        return None
    attempt = _attempt(params["attempt"])
    if attempt is None:
        return None
    parsed = routes.AttemptFinish.model_validate_json(body)
    out = await routes.finish_attempt(
        params["eval_id"], params["task_id"], attempt, parsed, state=state, _=principal
    )
    # as FastAPI renders the route's response_model: its JSON form through JSONResponse
    return JSONResponse(out.model_dump(mode="json"))


ROUTES: Routes = {
    ("POST", PREFIX + "/evals/{eval_id}/attempts/{task_id}/{attempt}/finish"): _finish,
}


__all__ = ["ROUTES"]
