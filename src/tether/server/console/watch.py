"""Drift and alerts pages: an agent's drift report (what moved, the tool sequences that
appeared and disappeared, served models) and the alert history with acknowledgement (admin)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tether.core.errors import TetherError
from tether.server.console.render import page
from tether.server.console.session import Viewer, admin_viewer, viewer
from tether.server.deps import State, get_state
from tether.store import alerts as alert_store
from tether.store.drift import check_drift, parse_span
from tether.store.profiles import profiled_agents

router = APIRouter()
HISTORY = 100


def cost_alerts(state: State, since: datetime) -> list[alert_store.Alert]:
    """Cost anomaly alerts for intervals since `since`, newest first: what Home and Costs flag
    (the seasonal band of core/anomaly.py, as the background pass found it)."""
    items, _ = alert_store.list_alerts(state.engine, kind="cost_anomaly", limit=200)
    return [a for a in items if a.bucket_at is not None and a.bucket_at >= since]


def _drift_context(state: State, agent: str | None, baseline: str, window: str
                   ) -> dict[str, Any]:  # fmt: skip
    now = datetime.now(UTC)
    agents = profiled_agents(state.engine, now - timedelta(days=30))
    report = None
    if agent:
        report = check_drift(state.engine, agent, now=now,
                             baseline=parse_span(baseline, "baseline"),
                             window=parse_span(window, "window")).to_dict()  # fmt: skip
    recent, _ = alert_store.list_alerts(state.engine, kind="drift", limit=10)
    changes, _ = alert_store.list_alerts(state.engine, kind="model_change", limit=10)
    return {"agents": agents, "agent": agent, "report": report, "baseline": baseline,
            "window": window, "drift_alerts": recent, "model_alerts": changes}  # fmt: skip


@router.get("/drift", response_class=HTMLResponse)
async def drift_page(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    q = request.query_params
    agent = q.get("agent") or None
    baseline, window = q.get("baseline", "7d"), q.get("window", "1d")
    try:
        ctx = await run_in_threadpool(_drift_context, state, agent, baseline, window)
    except TetherError as exc:
        return page(request, "error.html", status_code=400, title="Drift", message=exc.message)
    return page(request, "drift.html", title="Drift", **ctx)


def _alerts_context(state: State, status: str | None) -> dict[str, Any]:
    items, _ = alert_store.list_alerts(state.engine, status=status, limit=HISTORY)
    return {"alerts": items, "status": status or "all"}


@router.get("/alerts", response_class=HTMLResponse)
async def alerts_page(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    status = request.query_params.get("status") or None
    if status == "all":
        status = None
    try:
        ctx = await run_in_threadpool(_alerts_context, state, status)
    except TetherError as exc:
        return page(request, "error.html", status_code=400, title="Alerts", message=exc.message)
    return page(request, "alerts.html", title="Alerts", **ctx)


@router.post("/alerts/{alert_id}/ack")
async def ack(
    alert_id: str,
    request: Request,
    note: str = Form(""),
    who: Viewer = Depends(admin_viewer),
    state: State = Depends(get_state),
) -> Response:
    """Acknowledge an alert, as `tether alerts ack` and the API do."""
    try:
        await run_in_threadpool(lambda: alert_store.acknowledge(
            state.engine, alert_id, by=who.actor, note=note.strip() or None,
            now=datetime.now(UTC)))  # fmt: skip
    except TetherError as exc:
        ctx = await run_in_threadpool(_alerts_context, state, None)
        return page(request, "alerts.html", status_code=exc.http_status, title="Alerts",
                    message=exc.message, **ctx)  # fmt: skip
    return RedirectResponse(f"/alerts#{alert_id}", status_code=303)
