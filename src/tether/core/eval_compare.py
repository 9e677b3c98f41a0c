"""`tether eval compare A B`: per task, what regressed and what improved (success at target
cost), how the cost moved, and how the tool paths differ (the most common sequence of tool
calls on each side)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tether.core.evals import Attempt, Comparison, compare


@dataclass(frozen=True)
class TaskDiff:
    task_id: str
    change: str  # regressed | improved | same | only_a | only_b
    a_passes: int
    a_n: int
    b_passes: int
    b_n: int
    a_cost_nusd: int | None
    b_cost_nusd: int | None
    a_path: tuple[str, ...] | None
    b_path: tuple[str, ...] | None
    newly_failing: tuple[str, ...]  # assertions failing in B that never failed in A

    @property
    def path_changed(self) -> bool:
        return self.a_path is not None and self.b_path is not None and self.a_path != self.b_path


@dataclass(frozen=True)
class EvalDiff:
    tasks: tuple[TaskDiff, ...]
    comparisons: tuple[Comparison, ...]
    a_cost_nusd: int
    b_cost_nusd: int

    @property
    def regressions(self) -> list[TaskDiff]:
        return [t for t in self.tasks if t.change == "regressed"]

    @property
    def improvements(self) -> list[TaskDiff]:
        return [t for t in self.tasks if t.change == "improved"]


def _usual(paths: Sequence[tuple[str, ...]]) -> tuple[str, ...] | None:
    if not paths:
        return None
    return Counter(paths).most_common(1)[0][0]


def compare_evals(
    a: Sequence[Attempt],
    b: Sequence[Attempt],
    target_nusd: int | None,
    a_paths: Mapping[str, Sequence[tuple[str, ...]]] | None = None,
    b_paths: Mapping[str, Sequence[tuple[str, ...]]] | None = None,
    alpha: float = 0.05,
) -> EvalDiff:
    """A task regressed when its rate of success at target cost fell from A to B (improved when
    it rose); the paired sign-flip test of the gate is reported for the whole eval."""
    a_paths, b_paths = a_paths or {}, b_paths or {}
    by_a: dict[str, list[Attempt]] = {}
    by_b: dict[str, list[Attempt]] = {}
    for x in a:
        by_a.setdefault(x.task_id, []).append(x)
    for x in b:
        by_b.setdefault(x.task_id, []).append(x)
    diffs = []
    for task in sorted(set(by_a) | set(by_b)):
        ga, gb = by_a.get(task, []), by_b.get(task, [])
        pa = sum(x.at_target(target_nusd) for x in ga)
        pb = sum(x.at_target(target_nusd) for x in gb)
        if not ga or not gb:
            change = "only_a" if ga else "only_b"
        else:
            ra, rb = pa / len(ga), pb / len(gb)
            change = "regressed" if rb < ra else "improved" if rb > ra else "same"
        failed_a = {n for x in ga for n in x.failed}
        new = sorted({n for x in gb for n in x.failed} - failed_a)
        diffs.append(
            TaskDiff(
                task,
                change,
                pa,
                len(ga),
                pb,
                len(gb),
                sum(x.cost_nusd for x in ga) // len(ga) if ga else None,
                sum(x.cost_nusd for x in gb) // len(gb) if gb else None,
                _usual(a_paths.get(task, ())),
                _usual(b_paths.get(task, ())),
                tuple(new),
            )
        )
    comparisons, _ = compare(b, a, target_nusd, alpha)
    return EvalDiff(
        tuple(diffs), tuple(comparisons), sum(x.cost_nusd for x in a), sum(x.cost_nusd for x in b)
    )
