"""Canary rollouts of agent versions: sticky routing by a consistent hash of the task id, and the
rule that decides, from the runs each version served, to roll back (guardrails, or a candidate
significantly worse), promote, step up, keep collecting, or stop as inconclusive.

The sequential test is the always-valid mixture SPRT (mSPRT, Johari et al. 2017) on the
difference of success at target cost: it may be looked at after every task without inflating
its error rate, so the scheduler can evaluate as often as it likes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

RolloutStatus = Literal["running", "paused", "promoted", "rolled_back", "inconclusive"]
Action = Literal["continue", "step_up", "promote", "rollback", "inconclusive"]
ACTIVE: frozenset[str] = frozenset({"running", "paused"})
BUCKETS = 10_000  # routing resolution: 0.01 % of traffic


def bucket(salt: str, task_id: str) -> int:
    """The task's fixed place on [0, BUCKETS): the same task always lands in the same bucket."""
    digest = hashlib.blake2b(f"{salt}\x00{task_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def share_buckets(percent: float) -> int:
    return round(max(0.0, min(100.0, percent)) * BUCKETS / 100)


def route(
    status: str, salt: str, percent: float, baseline: str, candidate: str, task_id: str
) -> str:
    """The version a task goes to. The candidate takes the buckets below its share, so raising
    the share only moves tasks from baseline to candidate: a task never flips back while the
    rollout runs (or is paused)."""
    if status == "promoted":
        return candidate
    if status not in ACTIVE:
        return baseline
    return candidate if bucket(salt, task_id) < share_buckets(percent) else baseline


@dataclass(frozen=True)
class Arm:
    """What one version did in the rollout so far (runs routed to it since the start)."""

    tasks: int = 0
    successes: int = 0  # success at target cost
    errors: int = 0
    kills: int = 0
    policy_violations: int = 0  # runs with at least one policy denial
    cost_nusd: int = 0

    @property
    def rate(self) -> float | None:
        return self.successes / self.tasks if self.tasks else None

    def mean_cost_nusd(self) -> int | None:
        return self.cost_nusd // self.tasks if self.tasks else None


@dataclass(frozen=True)
class Rule:
    """The stated rule (parsed from YAML by core.rollout_rule). Money in nano-dollars."""

    alpha: float = 0.05
    # The mixing prior's spread on the difference in success: the effect size the test is
    # most sensitive to (0.1 = ten points).
    tau: float = 0.1
    promote_margin: float = 0.0
    min_tasks_per_arm: int = 20
    max_tasks: int = 2000
    max_duration_s: float = 7 * 86400.0
    target_cost_nusd: int | None = None
    # guardrails: roll back at once
    max_kills: int = 0
    max_policy_violation_rate: float | None = 0.0
    max_cost_per_task_nusd: int | None = None
    max_error_rate_margin: float | None = 0.05
    guardrail_min_tasks: int = 5
    steps: tuple[float, ...] = ()
    step_tasks: int = 50
    interval_s: float = 60.0


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    percent: float
    statistic: float | None = None  # the mSPRT likelihood ratio
    threshold: float | None = None


def msprt(base: Arm, cand: Arm, tau: float, margin: float = 0.0) -> float:
    """The mixture likelihood ratio for H0: p_cand - p_base = -margin, with a normal mixture
    N(0, tau^2) on the difference and the pooled variance. >= 1/alpha rejects H0."""
    if base.tasks == 0 or cand.tasks == 0:
        return 1.0
    # Half a success added to the pool keeps the variance positive when every run so far
    # passed (or failed) on both sides.
    pooled = (base.successes + cand.successes + 0.5) / (base.tasks + cand.tasks + 1)
    var = pooled * (1 - pooled) * (1 / base.tasks + 1 / cand.tasks)
    diff = cand.successes / cand.tasks - base.successes / base.tasks + margin
    t2 = tau * tau
    exponent = t2 * diff * diff / (2 * var * (var + t2))
    return math.sqrt(var / (var + t2)) * math.exp(min(exponent, 700.0))


def _guardrail(rule: Rule, base: Arm, cand: Arm) -> str | None:
    if cand.kills > rule.max_kills:
        return f"{cand.kills} candidate run(s) killed (the rule allows {rule.max_kills})"
    if cand.tasks < rule.guardrail_min_tasks:
        return None
    if rule.max_policy_violation_rate is not None:
        rate = cand.policy_violations / cand.tasks
        if rate > rule.max_policy_violation_rate:
            return (
                f"policy violations in {rate:.1%} of candidate runs "
                f"(the rule allows {rule.max_policy_violation_rate:.1%})"
            )
    cost = cand.mean_cost_nusd()
    limit = rule.max_cost_per_task_nusd
    if limit is not None and cost is not None and cost > limit:
        return f"candidate cost per task ${cost / 1e9:.4f} is above ${limit / 1e9:.4f}"
    if rule.max_error_rate_margin is not None and base.tasks:
        c_err, b_err = cand.errors / cand.tasks, base.errors / base.tasks
        if c_err > b_err + rule.max_error_rate_margin:
            return (
                f"candidate error rate {c_err:.1%} is above the baseline's {b_err:.1%} "
                f"by more than {rule.max_error_rate_margin:.1%}"
            )
    return None


def evaluate(
    rule: Rule, percent: float, base: Arm, cand: Arm, elapsed_s: float, tasks_at_step: int = 0
) -> Decision:
    """One evaluation of a running rollout. Guardrails first (roll back at once), then the
    sequential test, then the stopping limits, then a step-up."""
    breach = _guardrail(rule, base, cand)
    if breach is not None:
        return Decision("rollback", f"guardrail: {breach}", 0.0)
    threshold = 1.0 / rule.alpha
    ready = min(base.tasks, cand.tasks) >= rule.min_tasks_per_arm
    lam = msprt(base, cand, rule.tau) if ready else None
    shown = _rates(base, cand)
    if lam is not None and lam >= threshold and (cand.rate or 0.0) < (base.rate or 0.0):
        return Decision(
            "rollback",
            f"candidate significantly worse: {shown}; mSPRT ratio {lam:.1f} >= {threshold:.0f}",
            0.0,
            lam,
            threshold,
        )
    if ready:
        up = msprt(base, cand, rule.tau, rule.promote_margin)
        diff = (cand.rate or 0.0) - (base.rate or 0.0)
        if up >= threshold and diff > -rule.promote_margin:
            return Decision(
                "promote",
                f"candidate significantly {'better' if rule.promote_margin == 0 else 'not worse'}"
                f": {shown}; mSPRT ratio {up:.1f} >= {threshold:.0f}",
                100.0,
                up,
                threshold,
            )
    if base.tasks + cand.tasks >= rule.max_tasks or elapsed_s >= rule.max_duration_s:
        limit = (
            f"{base.tasks + cand.tasks} tasks (max {rule.max_tasks})"
            if base.tasks + cand.tasks >= rule.max_tasks
            else f"{elapsed_s / 3600:.1f} h (max {rule.max_duration_s / 3600:.1f} h)"
        )
        return Decision(
            "inconclusive",
            f"stopped after {limit} without a significant difference: {shown}; the baseline "
            "keeps all traffic",
            0.0,
            lam,
            threshold,
        )
    later = [s for s in rule.steps if s > percent]
    if later and tasks_at_step >= rule.step_tasks:
        return Decision(
            "step_up",
            f"{tasks_at_step} candidate tasks at {percent:g} % without a breach: {shown}",
            later[0],
            lam,
            threshold,
        )
    why = (
        f"collecting: {shown}; mSPRT ratio {lam:.2f} < {threshold:.0f}"
        if lam is not None
        else f"collecting: {shown}; the test starts at {rule.min_tasks_per_arm} tasks per version"
    )
    return Decision("continue", why, percent, lam, threshold)


def _rates(base: Arm, cand: Arm) -> str:
    def one(arm: Arm) -> str:
        return f"{arm.successes}/{arm.tasks}" + (
            f" ({arm.rate:.1%})" if arm.rate is not None else ""
        )

    return f"candidate {one(cand)} vs baseline {one(base)}"
