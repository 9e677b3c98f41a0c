"""Two-sample significance tests for drift: two proportions (z, Fisher's exact), two
distributions (Mann-Whitney U over value histograms, so many equal values cost nothing), and
Holm's step-down adjustment for testing several metrics at once."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of H0: p1 == p2 (pooled z test); 1.0 when the pooled rate is 0 or 1."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError("both samples must be non-empty")
    pooled = (x1 + x2) / (n1 + n2)
    var = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    if var <= 0:
        return 1.0
    z = abs(x1 / n1 - x2 / n2) / math.sqrt(var)
    return min(1.0, 2.0 * normal_sf(z))


def fisher_exact(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test on the 2x2 table [[x1, n1-x1], [x2, n2-x2]]:
    the probability of every table (same margins) no more likely than the one observed."""
    total, hits = n1 + n2, x1 + x2
    lo, hi = max(0, hits - n2), min(hits, n1)

    def log_pmf(k: int) -> float:
        return _log_comb(n1, k) + _log_comb(n2, hits - k) - _log_comb(total, hits)

    observed = log_pmf(x1)
    # relative tolerance, as R and SciPy do, so float noise does not drop the observed table
    cut = observed + 1e-7 * max(1.0, abs(observed))
    p = sum(math.exp(lp) for k in range(lo, hi + 1) if (lp := log_pmf(k)) <= cut)
    return min(1.0, p)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def proportion_test(x1: int, n1: int, x2: int, n2: int) -> tuple[str, float]:
    """Fisher's exact test when an expected cell is under 5 (the z test is then unreliable),
    the two-proportion z test otherwise."""
    total, hits = n1 + n2, x1 + x2
    expected = min(n1 * hits, n2 * hits, n1 * (total - hits), n2 * (total - hits)) / total
    if expected < 5:
        return "fisher_exact", fisher_exact(x1, n1, x2, n2)
    return "two_proportion_z", two_proportion_z(x1, n1, x2, n2)


def mann_whitney_u(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(P(b > a) + P(b == a)/2, two-sided p-value) of the Mann-Whitney U test, by the normal
    approximation with tie and continuity corrections. The first figure is 0.5 when neither
    side tends to be larger."""
    return mann_whitney_counts(Counter(a), Counter(b))


def mann_whitney_counts(a: Mapping[float, int], b: Mapping[float, int]) -> tuple[float, float]:
    """`mann_whitney_u` over histograms (value -> how many times it occurs): one step per
    distinct value, whatever the sample sizes."""
    n1, n2 = sum(a.values()), sum(b.values())
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples must be non-empty")
    below_a = 0  # values of a smaller than the current one
    u_b = 0.0
    ties = 0.0
    for v in sorted(set(a) | set(b)):
        ca, cb = a.get(v, 0), b.get(v, 0)
        # each b equal to v beats the a's below it and ties with the a's at it
        u_b += cb * (below_a + ca / 2)
        t = ca + cb
        ties += t**3 - t
        below_a += ca
    n = n1 + n2
    superiority = u_b / (n1 * n2)
    mean = n1 * n2 / 2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return superiority, 1.0
    z = max(0.0, abs(u_b - mean) - 0.5) / math.sqrt(var)
    return superiority, min(1.0, 2.0 * normal_sf(z))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (valid under any dependence), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def median_of_counts(counts: Mapping[float, int]) -> float:
    """The median of a histogram (the mean of the two middle values for an even count)."""
    n = sum(counts.values())
    if n == 0:
        raise ValueError("empty histogram")
    lo_rank, hi_rank = (n - 1) // 2, n // 2
    seen, lo = 0, None
    for v in sorted(counts):
        seen += counts[v]
        if lo is None and seen > lo_rank:
            lo = v
        if seen > hi_rank:
            return (float(lo) + float(v)) / 2 if lo is not None else float(v)
    raise AssertionError("unreachable: the ranks are within the count")
