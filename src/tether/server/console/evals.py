"""Console pages of the evals area: evals (list, one eval's per-task grid of attempts linking to
their runs, its gate verdicts, a compare view) and rollouts (live success at target cost per
version with intervals, the split, the rule's state and why, and the buttons). They build the
same models as the API routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tether.core.errors import BadRequestError, TetherError
from tether.server.console.render import page
from tether.server.console.session import Viewer, admin_viewer, viewer
from tether.server.deps import State, get_state
from tether.server.rollout_rule_apply import decide
from tether.server.routes import evals as eval_routes
from tether.server.routes import rollouts as rollout_routes
from tether.server.routes.eval_models import eval_out, verdict_out
from tether.store import evals as eval_store
from tether.store import gates
from tether.store import rollouts as rollout_store

router = APIRouter()
_KINDS = {"promote": "promoted", "rollback": "rolled_back", "pause": "paused", "resume": "resumed"}


def _evals(state: State) -> dict[str, Any]:
    items = [eval_out(r) for r in eval_store.list_evals(state.engine, limit=100)]
    verdicts = [verdict_out(v) for v in gates.list_verdicts(state.engine, limit=50)]
    return {"evals": items, "verdicts": verdicts}


@router.get("/evals", response_class=HTMLResponse)
async def evals_page(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    ctx = await run_in_threadpool(_evals, state)
    return page(request, "evals.html", title="Evals", **ctx)


@router.get("/evals/compare", response_class=HTMLResponse)
async def compare_page(
    request: Request,
    a: str,
    b: str,
    who: Viewer = Depends(viewer),
    state: State = Depends(get_state),
) -> HTMLResponse:
    d = await run_in_threadpool(eval_routes.compare, a, b, state)
    return page(request, "eval_compare.html", title="Compare evals", d=d)


@router.get("/evals/{eval_id}", response_class=HTMLResponse)
async def eval_page(
    request: Request,
    eval_id: str,
    who: Viewer = Depends(viewer),
    state: State = Depends(get_state),
) -> HTMLResponse:
    ev = await run_in_threadpool(eval_routes.get_eval, eval_id, state)
    grid: dict[str, dict[int, Any]] = {}
    for a in ev.attempts:
        grid.setdefault(a.task_id, {})[a.attempt] = a
    others = [
        e
        for e in (await run_in_threadpool(_evals, state))["evals"]
        if e.suite == ev.suite and e.id != ev.id
    ]
    return page(
        request,
        "eval.html",
        title=f"Eval {ev.suite} {ev.version}",
        ev=ev,
        grid=grid,
        repeats=range(ev.repeats),
        others=others,
    )


def _rollouts(state: State) -> list[Any]:
    out = []
    for ro in rollout_store.list_rollouts(state.engine, limit=50):
        model = rollout_routes.rollout_out(state, ro, detail=True)
        if ro["status"] == "running":
            d = decide(state.engine, ro, datetime.now(UTC), state.arms_cache)
            model.decision = {
                **(ro["decision"] or {}),
                "now": {"action": d.action, "reason": d.reason},
            }
        out.append(model)
    return out


@router.get("/rollouts", response_class=HTMLResponse)
async def rollouts_page(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    items = await run_in_threadpool(_rollouts, state)
    return page(
        request,
        "rollouts.html",
        title="Rollouts",
        rollouts=items,
        message=request.query_params.get("m"),
    )


@router.post("/rollouts/{rollout_id}/action")
async def rollout_action(
    rollout_id: str,
    action: str = Form(""),
    reason: str = Form(""),
    who: Viewer = Depends(admin_viewer),
    state: State = Depends(get_state),
) -> Response:
    """Promote, roll back, pause or resume, as `tether rollout ...` and the API do (audited)."""
    try:
        if action not in _KINDS:
            raise BadRequestError("choose promote, rollback, pause or resume")
        why = reason.strip() or f"{action} from the console by {who.actor}"
        ro = await run_in_threadpool(
            lambda: rollout_store.transition(
                state.engine,
                rollout_id,
                _KINDS[action],
                reason=why,
                actor=who.actor,
                now=datetime.now(UTC),
            )
        )
        rollout_routes.announce(state, ro, _KINDS[action], who.actor)
        message = f"{rollout_id}: {ro['status']}"
    except TetherError as exc:
        message = exc.message
    return RedirectResponse(f"/rollouts?m={message[:300]}", status_code=303)


def home_summary(state: State) -> dict[str, Any]:
    """Per agent, the last gate verdict and the rollout in progress (for the home page)."""
    verdicts = {a: verdict_out(v) for a, v in gates.last_per_agent(state.engine).items()}
    active = {r["agent"]: r for r in rollout_store.list_rollouts(state.engine, active=True)}
    return {"gate_verdicts": verdicts, "active_rollouts": active}
