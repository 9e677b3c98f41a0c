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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tether.core.records import TERMINAL_STATUSES
from tether.core.significance import holm, mann_whitney_counts, median_of_counts, proportion_test

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


# ---------------------------------------------------------------- the comparison


@dataclass(frozen=True)
class WindowStats:
    """One window's runs, aggregated: runs per distinct tool sequence, finished runs and those
    that succeeded at target, and a histogram (value -> runs) per distribution metric. The
    store builds it with GROUP BY; `of` builds it from run samples."""

    sequences: Mapping[tuple[str, ...], int]
    finished: int
    at_target: int
    values: Mapping[str, Mapping[float, int]]

    @property
    def runs(self) -> int:
        return sum(self.sequences.values())

    @classmethod
    def of(cls, runs: Iterable[RunSample], target_cost_nusd: int | None = None) -> WindowStats:
        sequences: Counter[tuple[str, ...]] = Counter()
        values: dict[str, Counter[float]] = {m: Counter() for m in DISTRIBUTIONS}
        finished = at_target = 0
        for r in runs:
            sequences[r.tools] += 1
            if r.status in TERMINAL_STATUSES:
                finished += 1
                cap = target_cost_nusd
                at_target += r.status == "succeeded" and (cap is None or r.cost_nusd <= cap)
            for metric in DISTRIBUTIONS:
                v = _value(metric, r)
                if v is not None:
                    values[metric][v] += 1
        return cls(sequences, finished, at_target, values)


DISTRIBUTIONS: tuple[Metric, ...] = ("cost", "tokens", "llm_calls", "latency")

# ---------------------------------------------------------------- value bins
# The store keeps per-hour histograms over bins rather than one row per run: exact below
# BIN_EXACT (small integers: LLM calls, short latencies), then geometric bins BIN_RATIO wide.
# Bins are monotone in the value, so Mann-Whitney's ranks only gain ties within a bin.
BIN_EXACT = 64
BIN_RATIO = 1.03
_LOG_RATIO = math.log(BIN_RATIO)


def value_bin(value: float) -> int:
    """The bin of a non-negative value (negative values share bin 0)."""
    if value < BIN_EXACT:
        return max(0, int(value))
    return BIN_EXACT + int(math.log(value / BIN_EXACT) / _LOG_RATIO)


def bin_value(index: int) -> float:
    """A bin's representative value: the integer itself, or the geometric middle."""
    if index < BIN_EXACT:
        return float(index)
    return float(BIN_EXACT * BIN_RATIO ** (index - BIN_EXACT + 0.5))


def binned(stats: WindowStats) -> WindowStats:
    """`stats` with every distribution value replaced by its bin's representative, as the
    store's histograms hold them."""
    values: dict[str, Counter[float]] = {}
    for metric, hist in stats.values.items():
        out: Counter[float] = Counter()
        for v, n in hist.items():
            out[bin_value(value_bin(v))] += n
        values[metric] = out
    return WindowStats(stats.sequences, stats.finished, stats.at_target, values)


def _value(metric: Metric, r: RunSample) -> float | None:
    if metric == "cost":
        return float(r.cost_nusd)
    if metric == "tokens":
        return float(r.tokens)
    if metric == "llm_calls":
        return float(r.llm_calls)
    return r.latency_ms


def _sequences(
    base: WindowStats, win: WindowStats, cfg: DriftConfig
) -> tuple[MetricShift, SequenceDetail]:
    counts: tuple[Counter[Gram], Counter[Gram]] = (Counter(), Counter())
    present: tuple[Counter[Gram], Counter[Gram]] = (Counter(), Counter())
    for side, stats in enumerate((base, win)):
        for tools, runs in stats.sequences.items():
            of_run = ngrams(tools, cfg.n)
            for g in of_run:
                counts[side][g] += runs
            for g in set(of_run):
                present[side][g] += runs
    jsd = js_distance(counts[0], counts[1], cfg.smoothing)
    nb, nw = base.runs, win.runs
    if nb < cfg.min_runs or nw < cfg.min_runs:
        shift = MetricShift("sequences", "gram_presence_bonferroni", "insufficient", nb, nw,
                            effect=jsd)  # fmt: skip
        return shift, SequenceDetail(jsd, cfg.n)
    grams = []
    for g in set(present[0]) | set(present[1]):
        _, p = proportion_test(present[0][g], nb, present[1][g], nw)
        grams.append(GramShift(g, present[0][g] / nb, present[1][g] / nw, p))
    grams.sort(key=lambda s: (s.p_value, -abs(s.window_share - s.baseline_share), s.gram))
    p_seq = min(1.0, grams[0].p_value * len(grams)) if grams else 1.0
    shift = MetricShift("sequences", "gram_presence_bonferroni", "stable", nb, nw,
                        effect=jsd, p_value=p_seq)  # fmt: skip
    appeared, disappeared = _changed_sequences(base, win, cfg)
    detail = SequenceDetail(jsd, cfg.n, tuple(grams[: cfg.top]), appeared, disappeared)
    return shift, detail


def _changed_sequences(
    base: WindowStats, win: WindowStats, cfg: DriftConfig
) -> tuple[tuple[SequenceCount, ...], tuple[SequenceCount, ...]]:
    """Whole tool sequences seen on one side only, most frequent first."""
    b, w = base.sequences, win.sequences
    appeared = sorted((SequenceCount(t, 0, c) for t, c in w.items() if t not in b),
                      key=lambda s: (-s.window_runs, s.tools))  # fmt: skip
    gone = sorted((SequenceCount(t, c, 0) for t, c in b.items() if t not in w),
                  key=lambda s: (-s.baseline_runs, s.tools))  # fmt: skip
    return tuple(appeared[: cfg.top]), tuple(gone[: cfg.top])


def _success(base: WindowStats, win: WindowStats, cfg: DriftConfig) -> MetricShift:
    nb, nw = base.finished, win.finished
    if nb < cfg.min_runs or nw < cfg.min_runs:
        return MetricShift("success_at_target", "two_proportion", "insufficient", nb, nw)
    test, p = proportion_test(base.at_target, nb, win.at_target, nw)
    rb, rw = base.at_target / nb, win.at_target / nw
    return MetricShift("success_at_target", test, "stable", nb, nw, rb, rw, rw - rb, p)


def _distribution(
    metric: Metric, base: WindowStats, win: WindowStats, cfg: DriftConfig
) -> MetricShift:
    b, w = base.values.get(metric, {}), win.values.get(metric, {})
    nb, nw = sum(b.values()), sum(w.values())
    if nb < cfg.min_runs or nw < cfg.min_runs:
        return MetricShift(metric, "mann_whitney_u", "insufficient", nb, nw)
    superiority, p = mann_whitney_counts(b, w)
    return MetricShift(metric, "mann_whitney_u", "stable", nb, nw,
                       median_of_counts(b), median_of_counts(w), superiority - 0.5, p)  # fmt: skip


def _practical(shift: MetricShift, cfg: DriftConfig) -> bool:
    effect = abs(shift.effect or 0.0)
    if shift.metric == "sequences":
        return effect >= cfg.min_jsd
    if shift.metric == "success_at_target":
        return effect >= cfg.min_rate_change
    return effect >= cfg.min_superiority


def compare(
    baseline: Sequence[RunSample] | WindowStats,
    window: Sequence[RunSample] | WindowStats,
    config: DriftConfig | None = None,
) -> DriftVerdict:
    """Compares the runs of a baseline window with those of the current window."""
    cfg = config or DriftConfig()
    if not 0 < cfg.alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    base = baseline if isinstance(baseline, WindowStats) else \
        WindowStats.of(baseline, cfg.target_cost_nusd)  # fmt: skip
    win = window if isinstance(window, WindowStats) else \
        WindowStats.of(window, cfg.target_cost_nusd)  # fmt: skip
    seq_shift, detail = _sequences(base, win, cfg)
    shifts = [seq_shift, _success(base, win, cfg)]
    shifts += [_distribution(m, base, win, cfg) for m in DISTRIBUTIONS]
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
        baseline_runs=base.runs,
        window_runs=win.runs,
        metrics=tuple(out),
        sequences=detail,
        moved=tuple(s.metric for s in out if s.status == "moved"),
    )
