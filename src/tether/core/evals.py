"""Eval statistics and the gate's verdict: pass@k / pass^k per task, success at target cost with
its Wilson interval, how many more attempts an undecided gate needs, and the paired comparison
against a baseline (exact McNemar per metric, Holm across metrics).

Pure: attempts come in as data, the verdict goes out as data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

from tether.core.stats import Rate, success_rate

Outcome = Literal["pass", "fail", "inconclusive"]
EXIT_CODES: dict[Outcome, int] = {"pass": 0, "fail": 1, "inconclusive": 3}
# A candidate attempt "costs more" than its pair only past this relative margin: a nano-dollar
# of noise is not a cost regression.
COST_TOLERANCE = 0.10
_MAX_ATTEMPTS = 10_000_000


@dataclass(frozen=True)
class Attempt:
    """One attempt's recorded outcome: did every assertion pass, what it cost, what failed."""

    task_id: str
    attempt: int
    passed: bool
    cost_nusd: int
    failed: tuple[str, ...] = ()
    assertions: tuple[str, ...] = ()

    def at_target(self, target_nusd: int | None) -> bool:
        """Success at target cost: every assertion passed and the attempt cost no more."""
        return self.passed and (target_nusd is None or self.cost_nusd <= target_nusd)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chance that at least one of k attempts passes, estimated without bias from c of n
    (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    _check(n, c, k)
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Chance that all k attempts pass (tau-bench's pass^k): C(c, k) / C(n, k)."""
    _check(n, c, k)
    return math.comb(c, k) / math.comb(n, k)


def _check(n: int, c: int, k: int) -> None:
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")


def z_for(confidence: float) -> float:
    """The two-sided normal quantile: 0.95 -> 1.96."""
    if not 0.5 <= confidence < 1.0:
        raise ValueError("confidence must be in [0.5, 1)")
    return float(NormalDist().inv_cdf(0.5 + confidence / 2))


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    # Real-valued successes (p * n) so the projection below is smooth in n.
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = (z / denom) * math.sqrt(max(0.0, p * (1.0 - p)) / n + z2 / (4.0 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def more_attempts(successes: int, total: int, threshold: float, z: float) -> int | None:
    """How many more attempts, at the rate seen so far, until the Wilson interval clears the
    threshold on one side. None when it never will (the rate sits on the threshold) or none
    were made."""
    if total <= 0:
        return None
    p = successes / total
    if abs(p - threshold) < 1e-12:
        return None

    def decided(n: int) -> bool:
        low, high = _wilson(p, n, z)
        return low >= threshold if p > threshold else high < threshold

    if decided(total):
        return 0
    hi = total
    while not decided(hi):
        hi *= 2
        if hi > _MAX_ATTEMPTS:
            return None
    lo = hi // 2  # not decided at lo (or lo == total), decided at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decided(mid) else (mid, hi)
    return hi - total


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exactly (integers until the last division)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return sum(math.comb(n, i) for i in range(k, n + 1)) / (1 << n)


def mcnemar_worse(b: int, c: int) -> float:
    """One-sided exact McNemar: b pairs where only the baseline succeeded, c where only the
    candidate did. The p-value that the candidate is no worse yet b is this large."""
    return binomial_tail(b, b + c)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given); controls the family-wise
    error rate over all the metrics compared."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class TaskSummary:
    """One task over its attempts: passes at target cost of n, pass@k, pass^k, costs."""

    task_id: str
    n: int
    passes: int
    pass_at_k: float
    pass_hat_k: float
    mean_cost_nusd: int
    failing: tuple[tuple[str, int], ...]  # assertion name, attempts it failed


def summarize_tasks(attempts: Iterable[Attempt], target_nusd: int | None) -> list[TaskSummary]:
    by_task: dict[str, list[Attempt]] = {}
    for a in attempts:
        by_task.setdefault(a.task_id, []).append(a)
    out = []
    for task_id, group in by_task.items():
        n = len(group)
        c = sum(a.at_target(target_nusd) for a in group)
        failing: dict[str, int] = {}
        for a in group:
            for name in a.failed:
                failing[name] = failing.get(name, 0) + 1
            if a.passed and not a.at_target(target_nusd):
                failing["(cost above target)"] = failing.get("(cost above target)", 0) + 1
        out.append(
            TaskSummary(
                task_id,
                n,
                c,
                pass_at_k(n, c, n),
                pass_hat_k(n, c, n),
                sum(a.cost_nusd for a in group) // n,
                tuple(sorted(failing.items())),
            )
        )
    return out


@dataclass(frozen=True)
class Comparison:
    """One metric compared on paired attempts: `worse` pairs favour the baseline."""

    metric: str
    pairs: int
    worse: int
    better: int
    p_value: float
    p_holm: float
    significant: bool

    def describe(self) -> str:
        return (
            f"{self.metric}: worse in {self.worse}, better in {self.better} of {self.pairs} "
            f"paired attempts (exact McNemar p={self.p_value:.4g}, Holm {self.p_holm:.4g})"
        )


@dataclass(frozen=True)
class GateCriteria:
    min_success: float | None = None
    max_cost_nusd: int | None = None
    confidence: float = 0.95


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reasons: tuple[str, ...]
    success: Rate
    more_attempts: int | None = None
    comparisons: tuple[Comparison, ...] = ()
    regressions: tuple[str, ...] = field(default=())

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]


def _pairs(
    candidate: Sequence[Attempt], baseline: Sequence[Attempt]
) -> list[tuple[Attempt, Attempt]]:
    # Attempt i of task t is paired with attempt i of the same task: both saw the same input.
    base = {(a.task_id, a.attempt): a for a in baseline}
    return [(base[key], a) for a in candidate if (key := (a.task_id, a.attempt)) in base]


def compare(
    candidate: Sequence[Attempt],
    baseline: Sequence[Attempt],
    target_nusd: int | None,
    alpha: float,
) -> tuple[list[Comparison], list[Comparison]]:
    """(gate metrics, per-assertion metrics), each family Holm-corrected on its own. The gate
    family is success at target cost and cost; the assertion family names what regressed."""
    pairs = _pairs(candidate, baseline)
    success = _binary("success at target cost", pairs, lambda a: a.at_target(target_nusd))
    worse = sum(c.cost_nusd > b.cost_nusd * (1 + COST_TOLERANCE) for b, c in pairs)
    better = sum(c.cost_nusd * (1 + COST_TOLERANCE) < b.cost_nusd for b, c in pairs)
    cost = ("cost per attempt", len(pairs), worse, better, mcnemar_worse(worse, better))
    names = sorted({n for b, c in pairs for n in (*b.assertions, *c.assertions)})
    per_assertion = [
        _binary(
            f"assertion {name!r}",
            [(b, c) for b, c in pairs if name in b.assertions and name in c.assertions],
            _passed(name),
        )
        for name in names
    ]
    return _family([success, cost], alpha), _family(per_assertion, alpha)


def _passed(name: str) -> Callable[[Attempt], bool]:
    return lambda a: name not in a.failed


def _binary(
    metric: str, pairs: Sequence[tuple[Attempt, Attempt]], ok: Callable[[Attempt], bool]
) -> tuple[str, int, int, int, float]:
    worse = sum(ok(b) and not ok(c) for b, c in pairs)
    better = sum(ok(c) and not ok(b) for b, c in pairs)
    return metric, len(pairs), worse, better, mcnemar_worse(worse, better)


def _family(raw: Sequence[tuple[str, int, int, int, float]], alpha: float) -> list[Comparison]:
    adjusted = holm([r[4] for r in raw])
    return [
        Comparison(m, n, w, b, p, q, q < alpha)
        for (m, n, w, b, p), q in zip(raw, adjusted, strict=True)
    ]


def gate(
    candidate: Sequence[Attempt],
    criteria: GateCriteria,
    baseline: Sequence[Attempt] | None = None,
) -> Verdict:
    """Pass, fail or inconclusive, with the reasons. Absolute: the Wilson interval of success at
    target cost against `min_success` (fail when wholly below, pass when wholly at or above,
    else inconclusive with the attempts still needed). Against a baseline: fail when the
    candidate is significantly worse on a gate metric after Holm's correction."""
    z = z_for(criteria.confidence)
    alpha = 1.0 - criteria.confidence
    target = criteria.max_cost_nusd
    k = sum(a.at_target(target) for a in candidate)
    n = len(candidate)
    rate = success_rate(k, n, z)
    reasons: list[str] = []
    outcome: Outcome = "pass"
    needed: int | None = None
    pct = f"{criteria.confidence:.0%}"
    if n == 0:
        return Verdict("inconclusive", ("no attempts were recorded",), rate)
    if criteria.min_success is not None:
        low, high = rate.low or 0.0, rate.high or 0.0
        shown = f"{k}/{n} = {k / n:.1%} (Wilson {pct}: {low:.1%}-{high:.1%})"
        if high < criteria.min_success:
            outcome = "fail"
            reasons.append(f"success at target cost {shown} is below {criteria.min_success:.0%}")
        elif low >= criteria.min_success:
            reasons.append(f"success at target cost {shown} is at least {criteria.min_success:.0%}")
        else:
            outcome = "inconclusive"
            needed = more_attempts(k, n, criteria.min_success, z)
            more = (
                f"about {needed} more attempts at this rate would decide"
                if needed is not None
                else "more attempts will not decide it: the rate sits on the threshold"
            )
            reasons.append(
                f"success at target cost {shown} straddles {criteria.min_success:.0%}; {more}"
            )
    comparisons: list[Comparison] = []
    regressions: list[str] = []
    if baseline is not None:
        comparisons, per_assertion = compare(candidate, baseline, target, alpha)
        for comp in comparisons:
            if comp.significant and comp.worse > comp.better:
                outcome = "fail"
                reasons.append("worse than the baseline on " + comp.describe())
        regressions = [c.describe() for c in per_assertion if c.significant and c.worse > c.better]
        if not any(c.significant for c in comparisons):
            reasons.append(f"no significant regression against the baseline at {pct}")
    return Verdict(outcome, tuple(reasons), rate, needed, tuple(comparisons), tuple(regressions))
