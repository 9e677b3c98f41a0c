"""Eval statistics: pass@k / pass^k, McNemar, the paired sign-flip test, Holm, the attempts-needed
projection, and the gate's calibration on seeded simulated agents.

The calibrated design: 50 tasks x 2 attempts per task and version (DESIGN below). Identical
versions (A/A) fail at most 5 % of 200 gates, also when a version's attempts at one task are
correlated; a true 20-point drop is caught at least 80 % of the time. One attempt per task cannot
reach 80 % at this level, which the last test records."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.core.evals import (
    Attempt,
    GateCriteria,
    _wilson,
    binomial_tail,
    gate,
    mcnemar_worse,
    more_attempts,
    pass_at_k,
    pass_hat_k,
    sign_flip_worse,
    summarize_tasks,
    z_for,
)
from tether.core.significance import holm

Z = z_for(0.95)
nck = st.integers(1, 40).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))
)


@given(nck)
def test_pass_at_k_and_pass_hat_k_are_probabilities_ordered_by_k(t: tuple[int, int, int]) -> None:
    n, c, k = t
    at, hat = pass_at_k(n, c, k), pass_hat_k(n, c, k)
    eps = 1e-12  # the binomial ratios are floats
    assert 0.0 <= hat <= c / n + eps and c / n <= at + eps and at <= 1.0
    if k < n:
        assert pass_at_k(n, c, k + 1) >= at - eps and pass_hat_k(n, c, k + 1) <= hat + eps


def test_pass_at_k_known_values() -> None:
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    assert pass_at_k(5, 1, 5) == 1.0 and pass_hat_k(5, 4, 5) == 0.0
    assert pass_hat_k(5, 4, 2) == pytest.approx(math.comb(4, 2) / math.comb(5, 2))
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


@given(st.integers(0, 60), st.integers(0, 60))
def test_mcnemar_is_a_valid_p_value_monotone_in_the_evidence(b: int, c: int) -> None:
    p = mcnemar_worse(b, c)
    assert 0.0 <= p <= 1.0
    assert mcnemar_worse(b + 1, c) <= p <= mcnemar_worse(b, c + 1)


def test_mcnemar_exact_reference() -> None:
    # 9 of 10 discordant pairs favour the baseline: P(X >= 9 | Bin(10, 1/2)) = 11/1024
    assert mcnemar_worse(9, 1) == pytest.approx(11 / 1024)
    assert binomial_tail(0, 5) == 1.0 and binomial_tail(6, 5) == 0.0


@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_is_monotone_and_between_raw_and_bonferroni(ps: list[float]) -> None:
    adj = holm(ps)
    m = len(ps)
    for raw, a in zip(ps, adj, strict=True):
        assert raw <= a + 1e-12 and a <= min(1.0, m * raw) + 1e-12
    order = sorted(range(m), key=lambda i: ps[i])
    assert all(adj[order[i]] <= adj[order[i + 1]] + 1e-12 for i in range(m - 1))


def test_holm_reference() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


@given(
    st.integers(1, 300).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
    st.sampled_from([0.5, 0.8, 0.85, 0.9]),
)
def test_more_attempts_is_the_least_that_decides(pair: tuple[int, int], threshold: float) -> None:
    k, n = pair
    need = more_attempts(k, n, threshold, Z)
    p = k / n
    if need is None:
        return

    def decided(m: int) -> bool:
        low, high = _wilson(p, m, Z)
        return low >= threshold if p > threshold else high < threshold

    assert decided(n + need)
    assert need == 0 or not decided(n + need - 1)


def test_more_attempts_on_the_threshold_is_none() -> None:
    assert more_attempts(17, 20, 0.85, Z) is None
    assert more_attempts(0, 0, 0.85, Z) is None
    assert more_attempts(95, 100, 0.85, Z) == 0


def test_gate_absolute_pass_fail_inconclusive_with_attempts_needed() -> None:
    def attempts(k: int, n: int) -> list[Attempt]:
        return [Attempt(f"t{i}", 0, i < k, 10) for i in range(n)]

    crit = GateCriteria(min_success=0.85)
    assert gate(attempts(100, 100), crit).outcome == "pass"
    assert gate(attempts(50, 100), crit).exit_code == 1
    v = gate(attempts(18, 20), crit)
    assert v.outcome == "inconclusive" and v.exit_code == 3 and v.more_attempts
    assert f"about {v.more_attempts} more attempts" in v.reasons[0]
    # cost above the target turns a passing attempt into a failure at target cost
    pricey = [Attempt(f"t{i}", 0, True, 600) for i in range(100)]
    assert gate(pricey, GateCriteria(min_success=0.85, max_cost_nusd=500)).outcome == "fail"
    assert gate([], crit).outcome == "inconclusive"


def test_gate_names_the_regressed_assertion_against_a_baseline() -> None:
    base = [Attempt(f"t{i}", 0, True, 10, (), ("refund", "polite")) for i in range(40)]
    cand = [
        Attempt(f"t{i}", 0, i >= 20, 10, ("refund",) if i < 20 else (), ("refund", "polite"))
        for i in range(40)
    ]
    v = gate(cand, GateCriteria(min_success=0.5), baseline=base)
    assert v.outcome == "fail"
    assert any("worse than the baseline on success at target cost" in r for r in v.reasons)
    assert len(v.regressions) == 1 and "'refund'" in v.regressions[0]
    same = gate(base, GateCriteria(min_success=0.5), baseline=base)
    assert same.outcome == "pass" and not same.regressions


def test_summarize_tasks_reports_failing_assertions_and_cost_misses() -> None:
    rows = [
        Attempt("a", 0, True, 10, (), ("x",)),
        Attempt("a", 1, False, 10, ("x",), ("x",)),
        Attempt("a", 2, True, 900, (), ("x",)),
    ]
    (s,) = summarize_tasks(rows, target_nusd=100)
    assert (s.n, s.passes, s.mean_cost_nusd) == (3, 1, 306)
    assert dict(s.failing) == {"x": 1, "(cost above target)": 1}
    assert s.pass_at_k == 1.0 and s.pass_hat_k == 0.0


def _brute_sign_flip(diffs: list[int]) -> float:
    observed = sum(diffs)
    signs = list(itertools.product((1, -1), repeat=len(diffs)))
    return sum(sum(s * abs(d) for s, d in zip(sig, diffs, strict=True)) >= observed
               for sig in signs) / len(signs)  # fmt: skip


small_diffs = st.lists(st.integers(-3, 3), min_size=0, max_size=9)


@given(small_diffs)
def test_sign_flip_is_the_exact_permutation_p_value(diffs: list[int]) -> None:
    assert sign_flip_worse(diffs) == pytest.approx(_brute_sign_flip(diffs), abs=1e-12)


@given(st.integers(0, 40), st.integers(0, 40))
def test_sign_flip_with_unit_differences_is_mcnemar(b: int, c: int) -> None:
    assert sign_flip_worse([1] * b + [-1] * c + [0] * 3) == pytest.approx(mcnemar_worse(b, c))


@given(small_diffs, st.data())
def test_sign_flip_is_monotone_in_the_evidence(diffs: list[int], data: st.DataObject) -> None:
    if not diffs:
        return
    i = data.draw(st.integers(0, len(diffs) - 1))
    more = [d + (j == i) for j, d in enumerate(diffs)]
    assert sign_flip_worse(more) <= sign_flip_worse(diffs) + 1e-12


@given(st.lists(st.integers(1, 4), min_size=1, max_size=10), st.sampled_from([0.01, 0.05, 0.1]))
def test_sign_flip_is_valid_under_the_null(mags: list[int], alpha: float) -> None:
    # every sign pattern is equally likely under H0: the share rejected at alpha is <= alpha
    patterns = list(itertools.product((1, -1), repeat=len(mags)))
    rejected = sum(
        sign_flip_worse([s * m for s, m in zip(sig, mags, strict=True)]) <= alpha
        for sig in patterns
    )
    assert rejected / len(patterns) <= alpha + 1e-12


@given(st.lists(st.integers(1, 4).flatmap(lambda m: st.sampled_from([m, -m])), min_size=40,
                max_size=80))  # fmt: skip
def test_sign_flip_normal_approximation_is_close_for_many_tasks(diffs: list[int]) -> None:
    # used only past _EXACT_STEPS (hundreds of tasks that moved); checked here against exact
    exact, approx = sign_flip_worse(diffs), sign_flip_worse(diffs, exact_steps=0)
    assert abs(exact - approx) < 0.03


# The design the calibration below holds for (and the README states): tasks x attempts per task.
DESIGN_TASKS, DESIGN_REPEATS = 50, 2
GATES = 200


def _agent(
    rng: random.Random, probs: list[float], repeats: int, spread: float | None = None
) -> list[Attempt]:
    """A scripted agent: task i passes with probability probs[i]. With `spread`, this version's
    rate on each task is first drawn from a Beta around probs[i] (smaller = wider), so its
    attempts at one task are correlated, as an agent with a per-task habit's would be."""
    out = []
    for i, q in enumerate(probs):
        if spread is not None:
            q = rng.betavariate(max(q * spread, 1e-3), max((1 - q) * spread, 1e-3))
        for r in range(repeats):
            ok = rng.random() < q
            out.append(Attempt(f"t{i}", r, ok, 10, () if ok else ("right answer",),
                               ("right answer",)))  # fmt: skip
    return out


def _task_probs(rng: random.Random, mean: float, n: int) -> list[float]:
    # Tasks differ in difficulty; the pairing on tasks is what makes the comparison sharp.
    return [min(1.0, max(0.0, rng.gauss(mean, 0.1))) for _ in range(n)]


def _gates(seed: int, mean: float, drop: float, repeats: int, spread: float | None = None) -> float:
    """The share of GATES seeded gates that fail the candidate (baseline at `mean`, candidate
    `drop` points lower on every task)."""
    rng = random.Random(seed)
    crit = GateCriteria(min_success=0.5)
    fails = 0
    for _ in range(GATES):
        probs = _task_probs(rng, mean, DESIGN_TASKS)
        worse = [max(0.0, q - drop) for q in probs]
        cand = _agent(rng, worse, repeats, spread)
        v = gate(cand, crit, baseline=_agent(rng, probs, repeats, spread))
        fails += v.outcome == "fail"
    return fails / GATES


def test_calibration_a_a_gates_fail_at_most_5_percent() -> None:
    # 50 tasks x 2 attempts, identical versions: 1.5 % of 200 gates fail
    assert _gates(20261201, 0.85, 0.0, DESIGN_REPEATS) <= 0.05


def test_calibration_a_20_point_drop_is_caught_80_percent_of_the_time_with_50_tasks() -> None:
    # 50 tasks x 2 attempts, 90 % -> 70 %: caught in 90.5 % of 200 gates
    assert _gates(7, 0.9, 0.2, DESIGN_REPEATS) >= 0.80


def test_calibration_holds_when_a_versions_attempts_at_a_task_are_correlated() -> None:
    # 50 tasks x 5 attempts, each version with its own per-task rate (Beta spread 0.5): the
    # task-level test stays at its level (1 %), where McNemar over attempts as independent
    # pairs fails 13 % of these A/A gates (and 19 % with 10 attempts)
    assert _gates(11, 0.85, 0.0, 5, spread=0.5) <= 0.05
    rng = random.Random(11)
    naive = 0
    for _ in range(GATES):
        probs = _task_probs(rng, 0.85, DESIGN_TASKS)
        cand, base = _agent(rng, probs, 5, 0.5), _agent(rng, probs, 5, 0.5)
        worse = sum(b.passed and not c.passed for b, c in zip(base, cand, strict=True))
        better = sum(c.passed and not b.passed for b, c in zip(base, cand, strict=True))
        naive += mcnemar_worse(worse, better) < 0.025  # the gate's Holm level for its first metric
    assert naive / GATES > 0.05


def test_one_attempt_per_task_cannot_reach_the_power_target() -> None:
    # 50 tasks x 1 attempt: the same drop is caught only 62.5 % of the time (no level-5 % test
    # on 50 paired coin flips gets to 80 %); the gate needs repeats >= 2
    assert _gates(7, 0.9, 0.2, 1) < 0.80
