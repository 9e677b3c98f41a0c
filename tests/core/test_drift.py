"""Drift statistics: properties of each piece, and seeded calibration of the whole check
(false alarms over same-distribution windows; power against a reorder, a new tool, a
success drop)."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from tether.core.drift import (
    BIN_EXACT,
    BIN_RATIO,
    END,
    START,
    DriftConfig,
    RunSample,
    WindowStats,
    bin_value,
    binned,
    compare,
    js_distance,
    ngrams,
    value_bin,
)
from tether.core.significance import (
    fisher_exact,
    holm,
    mann_whitney_counts,
    mann_whitney_u,
    median_of_counts,
    two_proportion_z,
)

tools_st = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=6)
counts_st = st.dictionaries(
    st.tuples(st.sampled_from("abcde"), st.sampled_from("abcde")), st.integers(0, 50), max_size=12
).map(Counter)


# ---------------------------------------------------------------- pieces


def test_ngrams_pad_start_and_end() -> None:
    assert ngrams(["a", "b"], 2) == [(START, "a"), ("a", "b"), ("b", END)]
    assert ngrams([], 2) == [(START, END)]
    assert ngrams([], 3) == [(START, END)]
    assert ngrams(["a"], 1) == [("a",)]


@given(tools_st, st.integers(2, 4))
def test_ngram_count_is_length_plus_padding(tools: list[str], n: int) -> None:
    assert len(ngrams(tools, n)) == max(1, len(tools) + 2 - n + 1)


@given(counts_st, counts_st)
def test_js_distance_is_a_bounded_symmetric_finite_distance(p: Counter, q: Counter) -> None:  # type: ignore[type-arg]
    d = js_distance(p, q)
    assert 0.0 <= d <= 1.0
    assert abs(d - js_distance(q, p)) < 1e-12
    assert js_distance(p, p) == 0.0


def test_unseen_tool_gives_a_finite_large_distance() -> None:
    p = Counter({("a", "b"): 100})
    q = Counter({("x", "y"): 100})
    d = js_distance(p, q, smoothing=0.5)
    assert 0.9 < d <= 1.0
    # without smoothing disjoint supports are at the maximum distance, still finite
    assert js_distance(p, q, smoothing=0.0) == 1.0


def test_fisher_and_z_agree_with_known_values() -> None:
    # the tea-tasting-style table [[1, 9], [11, 3]]: two-sided p = 0.002759 (R fisher.test)
    assert abs(fisher_exact(1, 10, 11, 14) - 0.0027594) < 1e-6
    # 80/100 vs 64/100: pooled z = 2.52, p = 0.0117
    assert abs(two_proportion_z(80, 100, 64, 100) - 0.01174) < 1e-4
    assert two_proportion_z(0, 10, 0, 20) == 1.0


@given(st.lists(st.floats(0, 1), min_size=1, max_size=10))
def test_holm_never_lowers_and_keeps_order(ps: list[float]) -> None:
    adj = holm(ps)
    for raw, a in zip(ps, adj, strict=True):
        assert raw <= a <= 1.0
    for i in range(len(ps)):
        for j in range(len(ps)):
            if ps[i] < ps[j]:
                assert adj[i] <= adj[j]


@given(
    st.lists(st.integers(0, 20), min_size=1, max_size=30),
    st.lists(st.integers(0, 20), min_size=1, max_size=30),
)
def test_mann_whitney_is_antisymmetric(a: list[int], b: list[int]) -> None:
    s_ab, p_ab = mann_whitney_u([float(x) for x in a], [float(x) for x in b])
    s_ba, p_ba = mann_whitney_u([float(x) for x in b], [float(x) for x in a])
    assert abs(s_ab + s_ba - 1.0) < 1e-9
    assert abs(p_ab - p_ba) < 1e-9
    assert 0.0 <= p_ab <= 1.0


def test_mann_whitney_sees_a_clear_shift() -> None:
    s, p = mann_whitney_u([float(x) for x in range(50)], [float(x) for x in range(100, 150)])
    assert s == 1.0
    assert p < 1e-10


# ---------------------------------------------------------------- a simulated agent

CHAIN = {
    START: [("search", 0.7), ("lookup", 0.3)],
    "search": [("lookup", 0.6), ("reply", 0.4)],
    "lookup": [("reply", 0.8), ("search", 0.2)],
}


def run_sample(rng: random.Random, i: int, success: float = 0.8) -> RunSample:
    tools: list[str] = []
    state = START
    while state != "reply" and len(tools) < 8:
        choices = CHAIN[state]
        nxt = rng.choices([t for t, _ in choices], weights=[p for _, p in choices])[0]
        tools.append(nxt)
        state = nxt
    llm = len(tools) + 1
    cost = int(sum(rng.lognormvariate(13.0, 0.4) for _ in range(llm)))
    return RunSample(
        run_id=f"run_{i}",
        status="succeeded" if rng.random() < success else "failed",
        tools=tuple(tools),
        cost_nusd=cost,
        tokens=int(cost / 500),
        llm_calls=llm,
        latency_ms=rng.lognormvariate(7.0, 0.5) * llm,
    )


def windows(
    seed: int, base_n: int = 600, win_n: int = 200
) -> tuple[list[RunSample], list[RunSample]]:
    rng = random.Random(seed)
    return [run_sample(rng, i) for i in range(base_n)], [run_sample(rng, i) for i in range(win_n)]


def test_same_distribution_windows_raise_at_most_5_percent_false_alarms() -> None:
    alarms = sum(compare(*windows(seed)).drifted for seed in range(100))
    print(f"false alarms: {alarms}/100")
    assert alarms <= 5


def _swap_search_lookup(r: RunSample) -> RunSample:
    t = list(r.tools)
    for i in range(len(t) - 1):
        if t[i] == "search" and t[i + 1] == "lookup":
            t[i], t[i + 1] = "lookup", "search"
    return RunSample(r.run_id, r.status, tuple(t), r.cost_nusd, r.tokens, r.llm_calls, r.latency_ms)


def _add_refund(r: RunSample, rng: random.Random) -> RunSample:
    if rng.random() >= 0.25:
        return r
    t = (*r.tools[:-1], "refund", r.tools[-1])
    return RunSample(r.run_id, r.status, t, r.cost_nusd, r.tokens, r.llm_calls, r.latency_ms)


def test_a_reordering_of_two_tools_is_detected() -> None:
    for seed in range(20):
        base, win = windows(seed)
        verdict = compare(base, [_swap_search_lookup(r) for r in win])
        assert "sequences" in verdict.moved, seed
        top = verdict.sequences.grams[0]
        assert top.gram in {
            ("lookup", "search"),
            ("search", "lookup"),
            (START, "lookup"),
            (START, "search"),
            ("search", "reply"),
            ("lookup", "reply"),
        }


def test_a_new_tool_is_detected_and_named() -> None:
    for seed in range(20):
        base, win = windows(seed)
        rng = random.Random(1000 + seed)
        verdict = compare(base, [_add_refund(r, rng) for r in win])
        assert "sequences" in verdict.moved, seed
        assert any("refund" in g.gram for g in verdict.sequences.grams[:3])
        assert all(s.baseline_runs == 0 for s in verdict.sequences.appeared)
        assert any("refund" in s.tools for s in verdict.sequences.appeared)


def test_a_20_percent_success_drop_is_detected() -> None:
    detected = 0
    for seed in range(20):
        rng = random.Random(seed)
        # a week of 100 runs a day against a day of 300: ~98 % power at alpha 0.01 (Holm over 6)
        base = [run_sample(rng, i, success=0.8) for i in range(700)]
        win = [run_sample(rng, i, success=0.64) for i in range(300)]
        verdict = compare(base, win)
        detected += "success_at_target" in verdict.moved
        assert "sequences" not in verdict.moved
    print(f"success drop detected: {detected}/20")
    assert detected >= 19


def test_a_cost_rise_is_a_cost_shift_with_its_medians() -> None:
    base, win = windows(7)
    dearer = [RunSample(r.run_id, r.status, r.tools, r.cost_nusd * 2, r.tokens, r.llm_calls,
                        r.latency_ms) for r in win]  # fmt: skip
    verdict = compare(base, dearer)
    cost = verdict.metric("cost")
    assert cost.status == "moved"
    assert cost.window is not None and cost.baseline is not None
    assert 1.6 < cost.window / cost.baseline < 2.5
    assert verdict.metric("tokens").status == "stable"


def test_target_cost_counts_dear_successes_as_misses() -> None:
    base, win = windows(3)
    cfg = DriftConfig(target_cost_nusd=int(sorted(r.cost_nusd for r in base)[300]))
    verdict = compare(base, win, cfg)
    rate = verdict.metric("success_at_target").baseline
    assert rate is not None and rate < 0.6  # half the runs cost more than the target


def test_too_few_runs_is_insufficient_not_stable() -> None:
    base, win = windows(1, base_n=10, win_n=5)
    verdict = compare(base, win)
    assert not verdict.drifted
    assert {m.status for m in verdict.metrics} == {"insufficient"}
    assert verdict.to_dict()["metrics"][0]["status"] == "insufficient"


@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=40),
    st.lists(st.integers(0, 30), min_size=1, max_size=40),
)
def test_histogram_mann_whitney_matches_the_brute_force_definition(
    a: list[int], b: list[int]
) -> None:
    superiority, _ = mann_whitney_counts(Counter(map(float, a)), Counter(map(float, b)))
    wins = sum((y > x) + 0.5 * (y == x) for x in a for y in b)
    assert abs(superiority - wins / (len(a) * len(b))) < 1e-9


@given(st.lists(st.integers(0, 50), min_size=1, max_size=41))
def test_median_of_counts_is_the_median(values: list[int]) -> None:
    s = sorted(values)
    mid = len(s) // 2
    expected = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    assert median_of_counts(Counter(map(float, values))) == expected


def test_window_stats_from_runs_and_from_aggregates_agree() -> None:
    base, win = windows(9)
    direct = compare(base, win)
    via = compare(WindowStats.of(base), WindowStats.of(win))
    assert direct == via


# ---------------------------------------------------------------- value bins (the store's form)


@given(st.floats(0, 1e12, allow_nan=False), st.floats(0, 1e12, allow_nan=False))
def test_value_bins_are_monotone_and_close(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert value_bin(lo) <= value_bin(hi)
    rep = bin_value(value_bin(hi))
    if hi >= BIN_EXACT:
        assert hi / BIN_RATIO <= rep <= hi * BIN_RATIO
    else:
        assert rep == int(hi)


def _binned(seed: int) -> tuple[WindowStats, WindowStats]:
    base, win = windows(seed)
    return binned(WindowStats.of(base)), binned(WindowStats.of(win))


def test_binned_windows_keep_false_alarms_at_most_5_percent() -> None:
    alarms = sum(compare(*_binned(seed)).drifted for seed in range(100))
    print(f"false alarms (binned): {alarms}/100")
    assert alarms <= 5


def test_binned_windows_still_see_a_cost_rise_and_a_new_tool() -> None:
    base, win = windows(7)
    dearer = [RunSample(r.run_id, r.status, r.tools, r.cost_nusd * 2, r.tokens, r.llm_calls,
                        r.latency_ms) for r in win]  # fmt: skip
    verdict = compare(binned(WindowStats.of(base)), binned(WindowStats.of(dearer)))
    cost = verdict.metric("cost")
    assert cost.status == "moved"
    assert cost.window is not None and cost.baseline is not None
    assert 1.6 < cost.window / cost.baseline < 2.5
    rng = random.Random(1007)
    newer = binned(WindowStats.of([_add_refund(r, rng) for r in win]))
    assert "sequences" in compare(binned(WindowStats.of(base)), newer).moved
