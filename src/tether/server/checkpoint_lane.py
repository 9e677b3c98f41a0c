"""The checkpoint lane: the three routes LangGraph's saver calls every super-step (`put`,
`put_writes`, `get_tuple`), served by the API lane (server/lane.py) straight from their endpoint
functions; whatever it does not take as is reaches FastAPI unchanged.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from tether.core.principal import Principal
from tether.server.deps import State
from tether.server.lane import PREFIX, Routes
from tether.server.routes import checkpoints as routes


async def _put(
    state: State, principal: Principal, scope: Scope, body: bytes, params: dict[str, str]
) -> Response | None:
    if not principal.has("agent"):
        return None
    parsed = routes.CheckpointIn.model_validate_json(body)
    out = await routes.put_checkpoint(parsed, state=state, principal=principal)
    return JSONResponse(out)


async def _writes(
    state: State, principal: Principal, scope: Scope, body: bytes, params: dict[str, str]
) -> Response | None:
    if not principal.has("agent"):
        return None
    parsed = routes.WritesIn.model_validate_json(body)
    return await routes.put_writes(parsed, state=state, principal=principal)


# the query of GET /checkpoints/tuple and the bounds its route declares
_TUPLE_QUERY = {"thread_id": (1, 200), "checkpoint_ns": (0, 200), "checkpoint_id": (0, 64)}


async def _tuple(
    state: State, principal: Principal, scope: Scope, body: bytes, params: dict[str, str]
) -> Response | None:
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


ROUTES: Routes = {
    ("POST", PREFIX + "/checkpoints"): _put,
    ("POST", PREFIX + "/checkpoints/writes"): _writes,
    ("GET", PREFIX + "/checkpoints/tuple"): _tuple,
}


__all__ = ["ROUTES"]
