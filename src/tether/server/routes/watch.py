"""`/api/v1/drift/{agent}` (what moved between a baseline window and the current one) and
`/api/v1/alerts` (cost anomaly, drift and model change alerts: list, get, acknowledge)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tether.server.alert_notify import notify
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.server.watch_settings import watch_config
from tether.store import alerts as alert_store
from tether.store.drift import check_drift, parse_span
from tether.store.watch import cost_pass, drift_pass

router = APIRouter(tags=["watch"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid request (`invalid_request`: a bad duration, status or cursor)"},
    401: {"description": "missing or invalid API key (`unauthenticated`)"},
    403: {"description": "the key lacks the scope (`permission_denied`)"},
}


class MetricOut(BaseModel):
    metric: Literal["sequences", "success_at_target", "cost", "tokens", "llm_calls", "latency"]
    test: str
    status: Literal["moved", "stable", "insufficient"]
    baseline_n: int
    window_n: int
    baseline: float | None = Field(description="rate (success) or median (the others)")
    window: float | None
    effect: float | None = Field(
        description="JS distance (sequences), rate difference (success), or "
        "P(window run > baseline run) - 0.5 (cost, tokens, LLM calls, latency)"
    )
    p_value: float | None
    p_adjusted: float | None = Field(description="Holm-adjusted over the metrics tested")


class GramOut(BaseModel):
    gram: list[str]
    baseline_share: float
    window_share: float
    p_value: float


class SequenceOut(BaseModel):
    tools: list[str]
    baseline_runs: int
    window_runs: int


class SequencesOut(BaseModel):
    jsd: float
    n: int
    grams: list[GramOut]
    appeared: list[SequenceOut]
    disappeared: list[SequenceOut]


class Window(BaseModel):
    from_: str = Field(alias="from")
    to: str


class ModelOut(BaseModel):
    model: str
    first_run_at: str
    last_run_at: str


class DriftOut(BaseModel):
    agent: str
    version: str | None
    baseline: Window
    window: Window
    target_cost_nusd: int | None
    drifted: bool
    moved: list[str]
    alpha: float
    baseline_runs: int
    window_runs: int
    metrics: list[MetricOut]
    sequences: SequencesOut
    models: list[ModelOut]


class AlertOut(BaseModel):
    id: str
    kind: Literal["cost_anomaly", "drift", "model_change"]
    dedup_key: str
    agent: str | None
    subject: str
    message: str
    status: Literal["open", "acknowledged"]
    occurrences: int
    created_at: str
    last_seen_at: str
    bucket_at: str | None
    value_usd: float | None
    expected_usd: float | None
    low_usd: float | None = Field(description="the bottom of the expected range")
    high_usd: float | None = Field(description="the top of the expected range")
    detail: dict[str, Any]
    notified_at: str | None
    acknowledged_at: str | None
    acknowledged_by: str | None
    ack_note: str | None


class AlertList(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None


class EvaluateOut(BaseModel):
    raised: list[AlertOut] = Field(description="alerts this evaluation created or updated")
    notified: int = Field(description="how many of them were new and sent to the webhooks")


class AckIn(BaseModel):
    note: str | None = Field(None, max_length=2000)


@router.get(
    "/drift/{agent}",
    response_model=DriftOut,
    responses=_ERRORS,
    operation_id="drift_check",
    summary="Drift of an agent: the current window against the baseline before it",
    description="Compares the runs started in the last `window` with those of the `baseline` "
    "before it: tool-call transition distributions (Jensen-Shannon distance), success at "
    "target cost, cost, tokens, LLM calls and latency per run. Reads the run profiles the "
    "background pass materialises (finished runs only).",
)
def drift(
    agent: str,
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
    baseline: str = Query("7d", description="e.g. 7d, 2w, 48h"),
    window: str = Query("1d", description="e.g. 1d, 6h"),
    version: str | None = None,
) -> DriftOut:
    report = check_drift(
        state.engine, agent, now=datetime.now(UTC), baseline=parse_span(baseline, "baseline"),
        window=parse_span(window, "window"), version=version,
    )  # fmt: skip
    return DriftOut.model_validate(report.to_dict())


@router.get(
    "/alerts",
    response_model=AlertList,
    responses=_ERRORS,
    operation_id="alerts_list",
    summary="Alert history, newest first",
)
def list_alerts(
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
    status: Literal["open", "acknowledged"] | None = None,
    kind: Literal["cost_anomaly", "drift", "model_change"] | None = None,
    agent: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = None,
) -> AlertList:
    items, next_cursor = alert_store.list_alerts(
        state.engine, status=status, kind=kind, agent=agent, limit=limit, cursor=cursor
    )
    return AlertList(items=[AlertOut(**a.to_dict()) for a in items], next_cursor=next_cursor)


@router.get(
    "/alerts/{alert_id}",
    response_model=AlertOut,
    responses={**_ERRORS, 404: {"description": "no such alert (`not_found`)"}},
    operation_id="alerts_get",
    summary="One alert",
)
def get_alert(
    alert_id: str, state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> AlertOut:
    return AlertOut(**alert_store.get_alert(state.engine, alert_id).to_dict())


@router.post(
    "/alerts/{alert_id}/ack",
    response_model=AlertOut,
    responses={
        **_ERRORS,
        404: {"description": "no such alert (`not_found`)"},
        409: {"description": "already acknowledged (`conflict`, code `already_acknowledged`)"},
    },
    operation_id="alerts_ack",
    summary="Acknowledge an alert",
)
def ack_alert(
    alert_id: str,
    body: AckIn | None = Body(None),
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> AlertOut:
    alert = alert_store.acknowledge(
        state.engine, alert_id, by=principal.actor, note=body.note if body else None,
        now=datetime.now(UTC),
    )  # fmt: skip
    return AlertOut(**alert.to_dict())


@router.post(
    "/watch/evaluate",
    response_model=EvaluateOut,
    responses=_ERRORS,
    operation_id="watch_evaluate",
    summary="Run the watch passes now (profiles, rollups, cost anomalies, drift)",
    description="What the background loops do on their schedule, at once: useful after a "
    "backfill, in a demo or from a cron job when `watch.enabled` is false. New alerts are sent "
    "to the webhooks as the loops would send them.",
)
async def evaluate(
    state: State = Depends(get_state), _: Principal = Depends(require("admin"))
) -> EvaluateOut:
    config = watch_config(state.settings.watch)
    now = datetime.now(UTC)

    def work() -> list[alert_store.Raised]:
        return [*cost_pass(state.engine, now=now, config=config),
                *drift_pass(state.engine, now=now, config=config)]  # fmt: skip

    raised = await run_in_threadpool(work)
    sent = await notify(state, raised, now=now)
    return EvaluateOut(raised=[AlertOut(**r.alert.to_dict()) for r in raised], notified=sent)
