"""Eval statistics and the gate's verdict: pass@k / pass^k per task, success at target cost with
its Wilson interval, how many more attempts an undecided gate needs, and the paired comparison
against a baseline (an exact paired sign-flip test per metric with the task as the unit, Holm
across metrics).

The comparison's design: N tasks x K attempts per version, attempt i of a task paired with
attempt i of the same task. The unit is the task, not the attempt: attempts of one task share
its difficulty (and whatever else an agent keeps between them), so they are not independent
pairs, and a test counting them as such (McNemar over attempts) would claim too much. Per task
the difference d = (baseline passes - candidate passes) over its pairs is, if the versions
behave alike, as likely +|d| as -|d|; the exact distribution of the sum of those signs gives the
p-value. With K = 1 it is the exact McNemar test. Calibration (tests/core/test_evals.py): with
50 tasks x 2 attempts, identical versions fail at most 5 % of gates and a 20-point drop is caught
at least 80 % of the time; with 1 attempt per task no level-5 % test reaches 80 %.

Pure: attempts come in as data, the verdict goes out as data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

from tether.core.significance import holm
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


# Above this many (tasks x total |d|) steps the sign-flip distribution is taken as normal
# (the sum of many independent symmetric terms); below it, it is convolved exactly.
_EXACT_STEPS = 2_000_000


def sign_flip_worse(diffs: Sequence[int], exact_steps: int = _EXACT_STEPS) -> float:
    """One-sided exact paired sign-flip (permutation) test: `diffs` are per-task integer
    differences, positive where the baseline did better. Under H0 each is as likely negated,
    independently; the p-value is P(sum of +-|d| >= sum of d). With every |d| = 1 this is the
    exact sign (McNemar) test."""
    mags = [abs(d) for d in diffs if d]
    if not mags:
        return 1.0
    observed = sum(diffs)
    total = sum(mags)
    if len(mags) * total > exact_steps:
        # the statistic moves in steps of 2: half a step of continuity correction
        sd = math.sqrt(sum(m * m for m in mags))
        return min(1.0, 0.5 * math.erfc((observed - 1) / (sd * math.sqrt(2.0))))
    # X = the sum of the magnitudes given a + sign; the statistic is 2X - total
    dist = [1.0] + [0.0] * total
    top = 0
    for m in mags:
        top += m
        for x in range(top, m - 1, -1):
            dist[x] = 0.5 * (dist[x] + dist[x - m])
        for x in range(m - 1, -1, -1):
            dist[x] *= 0.5
    cut = (observed + total + 1) // 2  # 2X - total >= observed
    return min(1.0, sum(dist[cut:]))


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
    """One metric compared on paired attempts: `worse` pairs favour the baseline, `better` the
    candidate; the p-value is the paired sign-flip test over the `tasks` they fall in."""

    metric: str
    pairs: int
    worse: int
    better: int
    p_value: float
    p_holm: float
    significant: bool
    tasks: int = 0

    def describe(self) -> str:
        return (
            f"{self.metric}: worse in {self.worse}, better in {self.better} of {self.pairs} "
            f"paired attempts over {self.tasks} tasks (paired sign-flip p={self.p_value:.4g}, "
            f"Holm {self.p_holm:.4g})"
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


Raw = tuple[str, int, int, int, float, int]  # metric, pairs, worse, better, p, tasks


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
    names = sorted({n for b, c in pairs for n in (*b.assertions, *c.assertions)})
    per_assertion = [
        _binary(
            f"assertion {name!r}",
            [(b, c) for b, c in pairs if name in b.assertions and name in c.assertions],
            _passed(name),
        )
        for name in names
    ]
    return _family([success, _cost(pairs)], alpha), _family(per_assertion, alpha)


def _by_task(
    pairs: Sequence[tuple[Attempt, Attempt]],
) -> dict[str, list[tuple[Attempt, Attempt]]]:
    out: dict[str, list[tuple[Attempt, Attempt]]] = {}
    for b, c in pairs:
        out.setdefault(b.task_id, []).append((b, c))
    return out


def _cost(pairs: Sequence[tuple[Attempt, Attempt]]) -> Raw:
    """A task costs more on the candidate when its paired attempts' total does, beyond the
    margin; the sign test over the tasks that moved."""
    worse = sum(c.cost_nusd > b.cost_nusd * (1 + COST_TOLERANCE) for b, c in pairs)
    better = sum(c.cost_nusd * (1 + COST_TOLERANCE) < b.cost_nusd for b, c in pairs)
    diffs = []
    for group in _by_task(pairs).values():
        base, cand = sum(b.cost_nusd for b, _ in group), sum(c.cost_nusd for _, c in group)
        diffs.append(
            1 if cand > base * (1 + COST_TOLERANCE) else -1 if cand * (1 + COST_TOLERANCE) < base
            else 0
        )  # fmt: skip
    tasks = len(diffs)
    return "cost per attempt", len(pairs), worse, better, sign_flip_worse(diffs), tasks


def _passed(name: str) -> Callable[[Attempt], bool]:
    return lambda a: name not in a.failed


def _binary(
    metric: str, pairs: Sequence[tuple[Attempt, Attempt]], ok: Callable[[Attempt], bool]
) -> Raw:
    worse = sum(ok(b) and not ok(c) for b, c in pairs)
    better = sum(ok(c) and not ok(b) for b, c in pairs)
    groups = _by_task(pairs).values()
    diffs = [sum(int(ok(b)) - int(ok(c)) for b, c in group) for group in groups]
    return metric, len(pairs), worse, better, sign_flip_worse(diffs), len(diffs)


def _family(raw: Sequence[Raw], alpha: float) -> list[Comparison]:
    adjusted = holm([r[4] for r in raw])
    return [
        Comparison(m, n, w, b, p, q, q < alpha, t)
        for (m, n, w, b, p, t), q in zip(raw, adjusted, strict=True)
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
            pairs = comparisons[0].pairs if comparisons else 0
            tasks = comparisons[0].tasks if comparisons else 0
            if tasks and pairs < 2 * tasks:
                reasons.append(
                    f"{pairs} paired attempts over {tasks} tasks: with under 2 attempts per task "
                    "a 20-point drop is missed about 1 time in 3 at 50 tasks; run both "
                    "versions with --repeat 2 or more"
                )
    return Verdict(outcome, tuple(reasons), rate, needed, tuple(comparisons), tuple(regressions))
