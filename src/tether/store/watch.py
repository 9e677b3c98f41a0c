"""The watch passes: bring run profiles and spend rollups up to date, then turn model change
points, cost anomalies and drift into alerts (de-duplicated, with a cool-down). The server's
background loops call these on a schedule; tests and the demo call them directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from tether.core.anomaly import GRANULARITIES, Anomaly, AnomalyConfig, bucket_of, detect, step
from tether.core.drift import DriftConfig, DriftVerdict
from tether.core.money import nusd_to_usd
from tether.store.alerts import AlertDraft, Raised, raise_alert
from tether.store.drift import check_drift, compare_model_change
from tether.store.evals import list_evals
from tether.store.profiles import ModelChange, latest_version, profile_runs, profiled_agents
from tether.store.rollups import Series, rollup_spend, series_since

# history read for a band: four weeks of hour-of-week seasons (plus the week of residuals)
_HISTORY = {"hour": timedelta(weeks=5), "day": timedelta(weeks=9)}


@dataclass(frozen=True)
class WatchConfig:
    cooldown: timedelta = timedelta(hours=1)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    drift_baseline: timedelta = timedelta(days=7)
    drift_window: timedelta = timedelta(days=1)
    # agents whose eval suite is re-run on a model change (watch.eval_on_model_change)
    eval_agents: frozenset[str] = frozenset()


def usd(nusd: int) -> str:
    """Dollars to the cent, or to a hundredth of a cent below $1 (agent spend is often small)."""
    value = nusd_to_usd(nusd)
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.4f}"


def refresh(engine: Engine, *, now: datetime) -> tuple[ModelChange, ...]:
    """Profiles finished runs and rebuilds recent rollups; returns new model change points."""
    changes = profile_runs(engine, now=now).model_changes
    rollup_spend(engine, now=now)
    return changes


def cost_pass(engine: Engine, *, now: datetime, config: WatchConfig) -> list[Raised]:
    """Refreshes, then alerts on model changes and on every series whose current or previous
    interval left its band."""
    raised = [model_change_alert(engine, c, now=now, config=config)
              for c in refresh(engine, now=now)]  # fmt: skip
    for granularity in GRANULARITIES:
        current = bucket_of(now, granularity)
        buckets = (current - step(granularity), current)
        for series in series_since(engine, granularity, current - _HISTORY[granularity]):
            for bucket in buckets:
                if bucket not in series.values:
                    continue
                found = detect(series.values, bucket, granularity, config.anomaly)
                if found is not None:
                    draft = cost_alert(series, granularity, found, partial=bucket == current)
                    raised.append(raise_alert(engine, draft, now=now, cooldown=config.cooldown))
    return raised


def cost_alert(series: Series, granularity: str, found: Anomaly, *, partial: bool) -> AlertDraft:
    band = found.band
    label = {"agent": "agent", "version": "version", "user": "user", "task_type": "task type"}
    who = f"{label.get(series.dimension, series.dimension)} {series.key}"
    when = found.bucket_at.strftime("%Y-%m-%d %H:00 UTC" if granularity == "hour" else "%Y-%m-%d")
    factor = f" ({found.factor:.1f}x)" if found.factor is not None else ""
    top = series.top_runs.get(found.bucket_at, [])
    so_far = " so far" if partial else ""
    message = (
        f"{who} spent {usd(found.value_nusd)}{so_far} in the {granularity} of {when}"
        f"{factor}; expected {usd(band.expected_nusd)}, normal range "
        f"{usd(band.low_nusd)} to {usd(band.high_nusd)}"
    )
    if top:
        message += "; driven by " + ", ".join(f"{rid} ({usd(c)})" for rid, c in top[:3])
    agent = series.key.split("@")[0].split(":")[0] if series.dimension != "user" else None
    return AlertDraft(
        kind="cost_anomaly",
        dedup_key=f"cost:{granularity}:{series.dimension}:{series.key}",
        subject=who,
        message=message,
        agent=agent,
        bucket_at=found.bucket_at,
        value_nusd=found.value_nusd,
        expected_nusd=band.expected_nusd,
        low_nusd=band.low_nusd,
        high_nusd=band.high_nusd,
        detail={
            "dimension": series.dimension, "key": series.key, "granularity": granularity,
            "direction": found.direction, "factor": found.factor, "basis": band.basis,
            "partial": partial,
            "top_runs": [{"run_id": rid, "cost_usd": float(nusd_to_usd(c))} for rid, c in top],
        },
    )  # fmt: skip


def _moved_text(verdict: DriftVerdict) -> str:
    parts = []
    for m in verdict.metrics:
        if m.status != "moved":
            continue
        if m.metric == "sequences":
            parts.append(f"tool sequences (JS distance {m.effect:.2f})")
        elif m.metric == "success_at_target" and m.baseline is not None and m.window is not None:
            parts.append(f"success at target {m.baseline:.0%} -> {m.window:.0%}")
        elif m.metric == "cost" and m.baseline is not None and m.window is not None:
            parts.append(f"median cost {usd(round(m.baseline))} -> {usd(round(m.window))}")
        elif m.metric == "latency" and m.baseline is not None and m.window is not None:
            parts.append(f"median latency {m.baseline:.0f} ms -> {m.window:.0f} ms")
        elif m.baseline is not None and m.window is not None:
            parts.append(f"{m.metric} {m.baseline:g} -> {m.window:g} (median)")
    return ", ".join(parts)


def model_change_alert(
    engine: Engine, change: ModelChange, *, now: datetime, config: WatchConfig
) -> Raised:
    verdict = compare_model_change(engine, change, now=now, config=config.drift)
    moved = _moved_text(verdict)
    message = (
        f"agent {change.agent} is now served {change.model} (was {change.previous}) since "
        f"{change.changed_at.strftime('%Y-%m-%d %H:%M UTC')}; "
        + (f"since then: {moved}" if moved else
           f"no shift yet over {verdict.window_runs} runs on the new model")
    )  # fmt: skip
    draft = AlertDraft(
        kind="model_change",
        dedup_key=f"model:{change.agent}:{change.model}",
        subject=f"agent {change.agent}",
        message=message,
        agent=change.agent,
        bucket_at=change.changed_at,
        detail={"change": change.to_dict(), "verdict": verdict.to_dict(),
                "eval": eval_plan(engine, change, config)},
    )  # fmt: skip
    return raise_alert(engine, draft, now=now, cooldown=config.cooldown)


def eval_plan(engine: Engine, change: ModelChange, config: WatchConfig) -> dict[str, Any]:
    """What a model change does about the agent's eval suite: `queued` (the server re-runs the
    newest suite run for the agent, on the version now served by the new model) or `not_run`
    with the reason and the command to run by hand."""
    suites = list_evals(engine, agent=change.agent, limit=1)
    if not suites:
        reason = (
            f"no eval suite has been run for agent {change.agent}; run one with "
            "`tether eval run SUITE --agent ... --version ...`"
        )
        return {"status": "not_run", "reason": reason}
    ev = suites[0]
    version = latest_version(engine, change.agent, change.model) or ev["version"]
    plan = {"suite": ev["suite"], "from_eval": ev["id"], "version": version}
    if change.agent not in config.eval_agents:
        reason = (
            f"set watch.eval_on_model_change.{change.agent} to re-run it on a change, or run: "
            f"tether eval run SUITE --agent ... --version {version}"
        )
        return plan | {"status": "not_run", "reason": reason}
    return plan | {"status": "queued"}


def drift_pass(engine: Engine, *, now: datetime, config: WatchConfig) -> list[Raised]:
    """A drift check of every agent with runs in the current window; one alert per agent
    and day while it drifts."""
    raised = []
    for agent in profiled_agents(engine, now - config.drift_window):
        report = check_drift(engine, agent, now=now, baseline=config.drift_baseline,
                             window=config.drift_window, config=config.drift)  # fmt: skip
        if not report.verdict.drifted:
            continue
        draft = AlertDraft(
            kind="drift",
            dedup_key=f"drift:{agent}",
            subject=f"agent {agent}",
            message=f"agent {agent} drifted: {_moved_text(report.verdict)} "
            f"({report.verdict.window_runs} runs against {report.verdict.baseline_runs})",
            agent=agent,
            bucket_at=bucket_of(now, "day"),
            detail=report.to_dict(),
        )
        raised.append(raise_alert(engine, draft, now=now, cooldown=config.cooldown))
    return raised
