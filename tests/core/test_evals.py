"""Eval statistics: pass@k / pass^k, McNemar, Holm, the attempts-needed projection, and the gate's
calibration on seeded simulated agents (A/A false fails; power against a 20-point drop)."""

from __future__ import annotations

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
    holm,
    mcnemar_worse,
    more_attempts,
    pass_at_k,
    pass_hat_k,
    summarize_tasks,
    z_for,
)

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


def _agent(rng: random.Random, probs: list[float], repeats: int, cost: int = 10) -> list[Attempt]:
    return [
        Attempt(
            f"t{i}",
            r,
            ok := rng.random() < q,
            cost,
            () if ok else ("right answer",),
            ("right answer",),
        )
        for i, q in enumerate(probs)
        for r in range(repeats)
    ]


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


def _task_probs(rng: random.Random, mean: float, n: int) -> list[float]:
    # Tasks differ in difficulty; the pairing on tasks is what makes the comparison sharp.
    return [min(1.0, max(0.0, rng.gauss(mean, 0.1))) for _ in range(n)]


def test_calibration_a_a_gates_fail_at_most_5_percent() -> None:
    rng = random.Random(20261201)
    crit = GateCriteria(min_success=0.5)
    fails = 0
    for _ in range(200):
        probs = _task_probs(rng, 0.85, 50)
        v = gate(_agent(rng, probs, 2), crit, baseline=_agent(rng, probs, 2))
        fails += v.outcome == "fail"
    assert fails / 200 <= 0.05, fails


def test_calibration_a_20_point_drop_is_caught_80_percent_of_the_time_with_50_tasks() -> None:
    rng = random.Random(7)
    crit = GateCriteria(min_success=0.5)
    caught = 0
    for _ in range(200):
        probs = _task_probs(rng, 0.9, 50)
        worse = [max(0.0, q - 0.2) for q in probs]
        v = gate(_agent(rng, worse, 2), crit, baseline=_agent(rng, probs, 2))
        caught += v.outcome == "fail"
    assert caught / 200 >= 0.80, caught
