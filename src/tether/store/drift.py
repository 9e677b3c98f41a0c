"""A drift check of one agent from stored run profiles: the current window (default the last
day) against the baseline window just before it (default the 7 days before), optionally one
version; and the before/after comparison of a model change point."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from tether.core.drift import DriftConfig, DriftVerdict, compare
from tether.core.errors import BadRequestError
from tether.store.costs import policy_run_budgets
from tether.store.engine import reading
from tether.store.profiles import ModelChange, model_history, window_stats

_SPAN_RE = re.compile(r"^(\d{1,4})([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_span(text: str, name: str) -> timedelta:
    """`30m`, `12h`, `7d`, `2w` -> a timedelta; anything else is a 400 naming the option."""
    m = _SPAN_RE.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise BadRequestError(f"{name}: {text!r} is not a duration; use e.g. 12h, 1d, 7d or 2w")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


@dataclass(frozen=True)
class DriftReport:
    agent: str
    version: str | None
    baseline_from: datetime
    window_from: datetime
    window_to: datetime
    verdict: DriftVerdict
    models: list[dict[str, Any]]
    target_cost_nusd: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent, "version": self.version,
            "baseline": {"from": self.baseline_from.isoformat(),
                         "to": self.window_from.isoformat()},
            "window": {"from": self.window_from.isoformat(), "to": self.window_to.isoformat()},
            "target_cost_nusd": self.target_cost_nusd,
            **self.verdict.to_dict(),
            "models": [{"model": m["model"], "first_run_at": m["first_run_at"].isoformat(),
                        "last_run_at": m["last_run_at"].isoformat()} for m in self.models],
        }  # fmt: skip


def _config(engine: Engine, agent: str, config: DriftConfig | None) -> DriftConfig:
    cfg = config or DriftConfig()
    if cfg.target_cost_nusd is None:
        # success "at target cost": the agent's policy run budget is the target when it has one
        with reading(engine) as conn:
            target = policy_run_budgets(conn).get(agent)
        if target is not None:
            cfg = replace(cfg, target_cost_nusd=target)
    return cfg


def check_drift(
    engine: Engine,
    agent: str,
    *,
    now: datetime,
    baseline: timedelta = timedelta(days=7),
    window: timedelta = timedelta(days=1),
    version: str | None = None,
    config: DriftConfig | None = None,
) -> DriftReport:
    """Compares the runs started in [now - window, now) with those of the baseline before."""
    if baseline <= timedelta(0) or window <= timedelta(0):
        raise BadRequestError("baseline and window: must be positive durations")
    cfg = _config(engine, agent, config)
    window_from = now - window
    baseline_from = window_from - baseline
    base, current = window_stats(engine, agent, baseline_from, window_from, now, version=version,
                                 target_cost_nusd=cfg.target_cost_nusd)  # fmt: skip
    verdict = compare(base, current, cfg)
    return DriftReport(agent, version, baseline_from, window_from, now, verdict,
                       model_history(engine, agent), cfg.target_cost_nusd)  # fmt: skip


def compare_model_change(
    engine: Engine,
    change: ModelChange,
    *,
    now: datetime,
    span: timedelta = timedelta(days=7),
    config: DriftConfig | None = None,
) -> DriftVerdict:
    """The agent's runs on the previous model in the `span` before the change against its
    runs on the new model since (up to `span` after)."""
    cfg = _config(engine, change.agent, config)
    t0, t1 = change.changed_at, min(now, change.changed_at + span)
    before, _ = window_stats(engine, change.agent, t0 - span, t0, t0, model=change.previous,
                             target_cost_nusd=cfg.target_cost_nusd)  # fmt: skip
    _, after = window_stats(engine, change.agent, t0, t0, t1, model=change.model,
                            target_cost_nusd=cfg.target_cost_nusd)  # fmt: skip
    return compare(before, after, cfg)
