"""Behaviour drift of one agent between a baseline window and a current window of its runs.

What is compared, and how (each test suited to its metric, one family-wise error rate):

- tool-call sequences: n-gram (default: transition, n=2) distributions, their Jensen-Shannon
  distance with additive smoothing over the union vocabulary (a tool never seen before costs no
  infinity), tested run by run — a run either contains an n-gram or not, so runs, not n-grams,
  are the independent observations — with Fisher's exact test or a two-proportion z test per
  n-gram and Bonferroni over the n-grams;
- success at target cost: a two-proportion z test on the finished runs;
- cost, tokens, LLM calls and latency per run: Mann-Whitney U (rank based: costs are skewed);

then Holm over the metrics, so a check raises a false alarm with probability at most `alpha`.
A metric moves only when it is significant *and* its effect passes a practical minimum, so that
a huge sample does not flag a 1 % change. Fewer than `min_runs` runs on a side: "insufficient".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tether.core.records import TERMINAL_STATUSES

START = "^"
END = "$"

Metric = Literal["sequences", "success_at_target", "cost", "tokens", "llm_calls", "latency"]
Status = Literal["moved", "stable", "insufficient"]
Gram = tuple[str, ...]


@dataclass(frozen=True)
class RunSample:
    """What drift needs of one run (store/run_profiles.py materialises these)."""

    run_id: str
    status: str
    tools: tuple[str, ...]
    cost_nusd: int
    tokens: int
    llm_calls: int
    latency_ms: float | None = None


@dataclass(frozen=True)
class DriftConfig:
    alpha: float = 0.01
    n: int = 2
    smoothing: float = 0.5
    min_runs: int = 30
    # practical minimums: a significant shift smaller than these is reported "stable"
    min_jsd: float = 0.05
    min_rate_change: float = 0.05
    min_superiority: float = 0.06
    target_cost_nusd: int | None = None
    top: int = 10


@dataclass(frozen=True)
class MetricShift:
    """One metric's verdict. `baseline`/`window` are rates (success) or medians (the others);
    `effect` is the JS distance, the rate difference, or P(window > baseline) - 0.5."""

    metric: Metric
    test: str
    status: Status
    baseline_n: int
    window_n: int
    baseline: float | None = None
    window: float | None = None
    effect: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "test": self.test, "status": self.status,
            "baseline_n": self.baseline_n, "window_n": self.window_n,
            "baseline": self.baseline, "window": self.window, "effect": self.effect,
            "p_value": self.p_value, "p_adjusted": self.p_adjusted,
        }  # fmt: skip


@dataclass(frozen=True)
class GramShift:
    """Share of runs containing an n-gram in each window, and its own (unadjusted) p-value."""

    gram: Gram
    baseline_share: float
    window_share: float
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return {"gram": list(self.gram), "baseline_share": self.baseline_share,
                "window_share": self.window_share, "p_value": self.p_value}  # fmt: skip


@dataclass(frozen=True)
class SequenceCount:
    tools: tuple[str, ...]
    baseline_runs: int
    window_runs: int

    def to_dict(self) -> dict[str, Any]:
        return {"tools": list(self.tools), "baseline_runs": self.baseline_runs,
                "window_runs": self.window_runs}  # fmt: skip


@dataclass(frozen=True)
class SequenceDetail:
    jsd: float
    n: int
    grams: tuple[GramShift, ...] = ()
    appeared: tuple[SequenceCount, ...] = ()
    disappeared: tuple[SequenceCount, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"jsd": self.jsd, "n": self.n, "grams": [g.to_dict() for g in self.grams],
                "appeared": [s.to_dict() for s in self.appeared],
                "disappeared": [s.to_dict() for s in self.disappeared]}  # fmt: skip


@dataclass(frozen=True)
class DriftVerdict:
    """What moved, by how much and how sure (`p_adjusted` is Holm over the metrics tested)."""

    alpha: float
    baseline_runs: int
    window_runs: int
    metrics: tuple[MetricShift, ...]
    sequences: SequenceDetail
    moved: tuple[Metric, ...] = field(default=())

    @property
    def drifted(self) -> bool:
        return bool(self.moved)

    def metric(self, name: Metric) -> MetricShift:
        return next(m for m in self.metrics if m.metric == name)

    def to_dict(self) -> dict[str, Any]:
        return {"drifted": self.drifted, "moved": list(self.moved), "alpha": self.alpha,
                "baseline_runs": self.baseline_runs, "window_runs": self.window_runs,
                "metrics": [m.to_dict() for m in self.metrics],
                "sequences": self.sequences.to_dict()}  # fmt: skip


# ---------------------------------------------------------------- n-grams and JS distance


def ngrams(tools: Sequence[str], n: int) -> list[Gram]:
    """The n-grams of one run's tool calls; n >= 2 pads with START/END so that the first and
    the last tool (and a run with no tool call at all) are part of the distribution."""
    if n < 1:
        raise ValueError("n must be at least 1")
    if n == 1:
        return [(t,) for t in tools]
    padded = (START, *tools, END)
    if len(padded) < n:
        return [padded]
    return [padded[i : i + n] for i in range(len(padded) - n + 1)]


def gram_counts(sequences: Iterable[Sequence[str]], n: int) -> Counter[Gram]:
    counts: Counter[Gram] = Counter()
    for tools in sequences:
        counts.update(ngrams(tools, n))
    return counts


def js_distance(p: Counter[Gram], q: Counter[Gram], smoothing: float = 0.5) -> float:
    """Jensen-Shannon distance (base 2, so in [0, 1]) between two count vectors, each smoothed
    by `smoothing` per n-gram of their union; 0 for identical or for two empty vectors."""
    if smoothing < 0:
        raise ValueError("smoothing must not be negative")
    vocab = set(p) | set(q)
    if not vocab:
        return 0.0
    np_ = sum(p.values()) + smoothing * len(vocab)
    nq = sum(q.values()) + smoothing * len(vocab)
    if np_ == 0 or nq == 0:
        return 1.0 if np_ != nq else 0.0
    div = 0.0
    for g in sorted(vocab):  # a fixed order: the float sum is then the same in every process
        pi = (p.get(g, 0) + smoothing) / np_
        qi = (q.get(g, 0) + smoothing) / nq
        m = (pi + qi) / 2
        if pi > 0:
            div += 0.5 * pi * math.log2(pi / m)
        if qi > 0:
            div += 0.5 * qi * math.log2(qi / m)
    return math.sqrt(min(1.0, max(0.0, div)))


# ---------------------------------------------------------------- tests


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
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples must be non-empty")
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    rank_b = 0.0
    ties = 0.0
    i, n = 0, n1 + n2
    while i < n:
        j = i
        while j + 1 < n and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        mid = (i + j) / 2 + 1  # ranks are 1-based; ties share the mean rank
        t = j - i + 1
        ties += t**3 - t
        rank_b += mid * sum(1 for k in range(i, j + 1) if pooled[k][1] == 1)
        i = j + 1
    u_b = rank_b - n2 * (n2 + 1) / 2
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


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


# ---------------------------------------------------------------- the comparison


def _sequences(
    base: Sequence[RunSample], win: Sequence[RunSample], cfg: DriftConfig
) -> tuple[MetricShift, SequenceDetail]:
    jsd = js_distance(
        gram_counts((r.tools for r in base), cfg.n),
        gram_counts((r.tools for r in win), cfg.n),
        cfg.smoothing,
    )
    if len(base) < cfg.min_runs or len(win) < cfg.min_runs:
        shift = MetricShift("sequences", "gram_presence_bonferroni", "insufficient",
                            len(base), len(win), effect=jsd)  # fmt: skip
        return shift, SequenceDetail(jsd, cfg.n)
    in_base: Counter[Gram] = Counter()
    in_win: Counter[Gram] = Counter()
    for r in base:
        in_base.update(set(ngrams(r.tools, cfg.n)))
    for r in win:
        in_win.update(set(ngrams(r.tools, cfg.n)))
    grams = []
    for g in set(in_base) | set(in_win):
        _, p = proportion_test(in_base[g], len(base), in_win[g], len(win))
        grams.append(GramShift(g, in_base[g] / len(base), in_win[g] / len(win), p))
    grams.sort(key=lambda s: (s.p_value, -abs(s.window_share - s.baseline_share), s.gram))
    p_seq = min(1.0, grams[0].p_value * len(grams)) if grams else 1.0
    shift = MetricShift("sequences", "gram_presence_bonferroni", "stable", len(base), len(win),
                        effect=jsd, p_value=p_seq)  # fmt: skip
    detail = SequenceDetail(
        jsd, cfg.n, tuple(grams[: cfg.top]), *_changed_sequences(base, win, cfg)
    )
    return shift, detail


def _changed_sequences(
    base: Sequence[RunSample], win: Sequence[RunSample], cfg: DriftConfig
) -> tuple[tuple[SequenceCount, ...], tuple[SequenceCount, ...]]:
    """Whole tool sequences seen on one side only, most frequent first."""
    b = Counter(r.tools for r in base)
    w = Counter(r.tools for r in win)
    appeared = sorted((SequenceCount(t, 0, c) for t, c in w.items() if t not in b),
                      key=lambda s: (-s.window_runs, s.tools))  # fmt: skip
    gone = sorted((SequenceCount(t, c, 0) for t, c in b.items() if t not in w),
                  key=lambda s: (-s.baseline_runs, s.tools))  # fmt: skip
    return tuple(appeared[: cfg.top]), tuple(gone[: cfg.top])


def _success(base: Sequence[RunSample], win: Sequence[RunSample], cfg: DriftConfig) -> MetricShift:
    def ok(r: RunSample) -> bool:
        cap = cfg.target_cost_nusd
        return r.status == "succeeded" and (cap is None or r.cost_nusd <= cap)

    b = [r for r in base if r.status in TERMINAL_STATUSES]
    w = [r for r in win if r.status in TERMINAL_STATUSES]
    if len(b) < cfg.min_runs or len(w) < cfg.min_runs:
        return MetricShift("success_at_target", "two_proportion", "insufficient", len(b), len(w))
    xb, xw = sum(map(ok, b)), sum(map(ok, w))
    test, p = proportion_test(xb, len(b), xw, len(w))
    rb, rw = xb / len(b), xw / len(w)
    return MetricShift("success_at_target", test, "stable", len(b), len(w), rb, rw, rw - rb, p)


def _value(metric: Metric, r: RunSample) -> float | None:
    if metric == "cost":
        return float(r.cost_nusd)
    if metric == "tokens":
        return float(r.tokens)
    if metric == "llm_calls":
        return float(r.llm_calls)
    return r.latency_ms


def _distribution(
    metric: Metric, base: Sequence[RunSample], win: Sequence[RunSample], cfg: DriftConfig
) -> MetricShift:
    b = [v for r in base if (v := _value(metric, r)) is not None]
    w = [v for r in win if (v := _value(metric, r)) is not None]
    if len(b) < cfg.min_runs or len(w) < cfg.min_runs:
        return MetricShift(metric, "mann_whitney_u", "insufficient", len(b), len(w))
    superiority, p = mann_whitney_u(b, w)
    return MetricShift(metric, "mann_whitney_u", "stable", len(b), len(w),
                       median(b), median(w), superiority - 0.5, p)  # fmt: skip


def _practical(shift: MetricShift, cfg: DriftConfig) -> bool:
    effect = abs(shift.effect or 0.0)
    if shift.metric == "sequences":
        return effect >= cfg.min_jsd
    if shift.metric == "success_at_target":
        return effect >= cfg.min_rate_change
    return effect >= cfg.min_superiority


def compare(
    baseline: Sequence[RunSample], window: Sequence[RunSample], config: DriftConfig | None = None
) -> DriftVerdict:
    """Compares the runs of a baseline window with those of the current window."""
    cfg = config or DriftConfig()
    if not 0 < cfg.alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    seq_shift, detail = _sequences(baseline, window, cfg)
    shifts = [seq_shift, _success(baseline, window, cfg)]
    shifts += [_distribution(m, baseline, window, cfg)
               for m in ("cost", "tokens", "llm_calls", "latency")]  # fmt: skip
    tested = [i for i, s in enumerate(shifts) if s.status != "insufficient"]
    adjusted = holm([shifts[i].p_value or 1.0 for i in tested])
    out = list(shifts)
    for i, p_adj in zip(tested, adjusted, strict=True):
        s = shifts[i]
        moved = p_adj < cfg.alpha and _practical(s, cfg)
        status: Status = "moved" if moved else "stable"
        out[i] = MetricShift(s.metric, s.test, status, s.baseline_n, s.window_n,
                             s.baseline, s.window, s.effect, s.p_value, p_adj)  # fmt: skip
    return DriftVerdict(
        alpha=cfg.alpha,
        baseline_runs=len(baseline),
        window_runs=len(window),
        metrics=tuple(out),
        sequences=detail,
        moved=tuple(s.metric for s in out if s.status == "moved"),
    )
