"""Canary rollouts: sticky consistent-hash routing, the mSPRT rule on seeded simulations (A/A wrong
decisions at most alpha; fewer tasks than a fixed-size test of the same power; guardrails fire
within one evaluation interval) and the rule YAML."""

from __future__ import annotations

import math
import random
from collections import Counter
from statistics import NormalDist

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.core.rollout import Arm, Rule, evaluate, msprt, route
from tether.core.rollout_rule import RuleError, parse_rule

task_ids = st.text(min_size=1, max_size=40)


@given(task_ids, st.floats(0, 100), st.floats(0, 100))
def test_raising_the_share_never_moves_a_task_back_to_the_baseline(
    task: str, a: float, b: float
) -> None:
    low, high = sorted((a, b))
    first = route("running", "ro_1", low, "v2", "v3", task)
    later = route("running", "ro_1", high, "v2", "v3", task)
    assert first == later or (first, later) == ("v2", "v3")
    assert route("running", "ro_1", low, "v2", "v3", task) == first  # sticky: same answer again
    assert route("paused", "ro_1", low, "v2", "v3", task) == first


def test_shares_and_terminal_states() -> None:
    tasks = [f"task-{i}" for i in range(20_000)]
    share = sum(route("running", "ro_x", 10, "v1", "v2", t) == "v2" for t in tasks) / len(tasks)
    assert 0.09 < share < 0.11
    assert {route("promoted", "ro_x", 10, "v1", "v2", t) for t in tasks[:50]} == {"v2"}
    assert {route("rolled_back", "ro_x", 10, "v1", "v2", t) for t in tasks[:50]} == {"v1"}
    assert {route("running", "ro_x", 0, "v1", "v2", t) for t in tasks[:50]} == {"v1"}


@given(st.integers(1, 500), st.integers(1, 500), st.floats(0, 1), st.floats(0, 1))
def test_msprt_ratio_is_finite_and_grows_with_the_gap(
    na: int, nb: int, pa: float, pb: float
) -> None:
    base, cand = Arm(na, round(pa * na)), Arm(nb, round(pb * nb))
    lam = msprt(base, cand, 0.1)
    assert math.isfinite(lam) and lam > 0
    assert msprt(cand, base, 0.1) == pytest.approx(lam)  # symmetric in the two arms
    assert msprt(base, base, 0.1) < 1.0  # no difference is evidence for H0
    # at the same counts (same variance) a larger gap from H0 is more evidence against it
    gap = cand.successes / nb - base.successes / na
    if gap >= 0:
        assert msprt(base, cand, 0.1, margin=0.05) >= lam


def _simulate(
    pb: float, pc: float, percent: float, rule: Rule, rng: random.Random, every: int = 10
) -> tuple[str, int]:
    b, c = [0, 0], [0, 0]
    t = 0
    while True:
        t += 1
        arm, p = (c, pc) if rng.random() * 100 < percent else (b, pb)
        arm[0] += 1
        arm[1] += rng.random() < p
        if t % every == 0:
            d = evaluate(rule, percent, Arm(b[0], b[1]), Arm(c[0], c[1]), elapsed_s=0)
            if d.action != "continue":
                return d.action, t


RULE = Rule(max_error_rate_margin=None, max_policy_violation_rate=None, max_tasks=1500)


def test_a_a_rollouts_decide_wrongly_at_most_alpha() -> None:
    rng = random.Random(1)
    outcomes = Counter(_simulate(0.8, 0.8, 50, RULE, rng)[0] for _ in range(200))
    wrong = outcomes["promote"] + outcomes["rollback"]
    assert wrong / 200 <= RULE.alpha, outcomes
    assert outcomes["inconclusive"] == 200 - wrong  # stopped at max_tasks, saying so


def test_the_sequential_rule_needs_fewer_tasks_than_a_fixed_test_of_the_same_power() -> None:
    rng = random.Random(2)
    pb, pc = 0.8, 0.6
    runs = [_simulate(pb, pc, 50, RULE, rng) for _ in range(200)]
    power = sum(a == "rollback" for a, _ in runs) / len(runs)
    mean_tasks = sum(t for _, t in runs) / len(runs)
    # the two-sided two-proportion z-test with equal arms at the same alpha and power
    z = NormalDist().inv_cdf
    pbar = (pb + pc) / 2
    spread = z(1 - RULE.alpha / 2) * math.sqrt(2 * pbar * (1 - pbar))
    spread += z(min(power, 0.99)) * math.sqrt(pb * (1 - pb) + pc * (1 - pc))
    per_arm = (spread / (pb - pc)) ** 2
    assert power >= 0.9
    assert mean_tasks < 2 * per_arm, (mean_tasks, 2 * per_arm)
    # and a better candidate is promoted
    assert _simulate(0.6, 0.85, 50, RULE, random.Random(3))[0] == "promote"


def test_guardrails_fire_at_the_first_evaluation_after_the_breach() -> None:
    rule = Rule(max_cost_per_task_nusd=100, guardrail_min_tasks=5, max_error_rate_margin=0.1)
    healthy = Arm(tasks=30, successes=25, cost_nusd=30 * 50)
    base = Arm(tasks=300, successes=250, errors=3, cost_nusd=300 * 50)
    assert evaluate(rule, 10, base, healthy, 0).action == "continue"
    killed = Arm(tasks=31, successes=25, kills=1, cost_nusd=31 * 50)
    d = evaluate(rule, 10, base, killed, 0)
    assert d.action == "rollback" and "killed" in d.reason and d.percent == 0
    pricey = Arm(tasks=8, successes=8, cost_nusd=8 * 150)
    assert "cost per task" in evaluate(rule, 10, base, pricey, 0).reason
    errs = Arm(tasks=20, successes=15, errors=5, cost_nusd=20 * 50)
    assert "error rate" in evaluate(rule, 10, base, errs, 0).reason
    denied = Arm(tasks=20, successes=20, policy_violations=1)
    assert "policy violations" in evaluate(Rule(), 10, Arm(50, 40), denied, 0).reason


def test_guardrail_in_a_stream_fires_within_one_interval() -> None:
    # A candidate whose runs start costing 3x at task 200: the next evaluation rolls back.
    rule = Rule(max_cost_per_task_nusd=80, max_error_rate_margin=None, guardrail_min_tasks=5)
    rng = random.Random(4)
    interval = 10
    cand_tasks = cand_cost = base_tasks = 0
    for t in range(1, 2000):
        if rng.random() < 0.5:
            cand_tasks += 1
            cand_cost += 50 if t < 200 else 2_000
        else:
            base_tasks += 1
        if t % interval == 0:
            d = evaluate(
                rule,
                50,
                Arm(base_tasks, base_tasks),
                Arm(cand_tasks, cand_tasks, cost_nusd=cand_cost),
                0,
            )
            if d.action == "rollback":
                assert 200 <= t < 200 + interval + 1, t
                return
    pytest.fail("the guardrail never fired")


def test_step_ups_and_limits() -> None:
    rule = Rule(steps=(5, 25, 50, 100), step_tasks=20, max_error_rate_margin=None)
    base, cand = Arm(200, 160), Arm(20, 16)
    d = evaluate(rule, 5, base, cand, 0, tasks_at_step=20)
    assert (d.action, d.percent) == ("step_up", 25)
    assert evaluate(rule, 5, base, cand, 0, tasks_at_step=19).action == "continue"
    stop = evaluate(Rule(max_duration_s=3600), 10, base, cand, elapsed_s=7200)
    assert stop.action == "inconclusive" and "1.0 h" in stop.reason


def test_rule_yaml_parses_and_reports_lines() -> None:
    rule = parse_rule(
        "alpha: 0.01\ntarget_cost_usd: 0.05\nguardrails:\n  max_cost_per_task_usd: 0.1\n"
        "steps: [5, 25, 100]\n"
    ).to_rule()
    assert (rule.alpha, rule.target_cost_nusd, rule.max_cost_per_task_nusd) == (
        0.01,
        50_000_000,
        100_000_000,
    )
    assert rule.steps == (5, 25, 100)
    assert parse_rule("").to_rule() == Rule()
    with pytest.raises(RuleError) as err:
        parse_rule("alpha: 0.01\nguardrails:\n  max_kils: 1\nsteps: [50, 5]\n", "r.yaml")
    text = err.value.message
    assert "r.yaml:3: guardrails.max_kils: unknown key" in text
    assert "r.yaml:4: steps: steps must be increasing" in text
