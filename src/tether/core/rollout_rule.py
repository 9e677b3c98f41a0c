"""The rollout rule YAML (`tether rollout start ... --rule FILE`): parsed with line-numbered
errors into a `core.rollout.Rule`.

    alpha: 0.05               # the sequential test's error rate
    target_cost_usd: 0.05     # a run succeeds only at or under this cost
    max_tasks: 2000           # then stop as inconclusive
    max_duration_s: 604800
    interval_s: 60            # how often the rule is applied
    guardrails: {max_kills: 0, max_policy_violation_rate: 0.0, max_cost_per_task_usd: 0.10,
                 max_error_rate_margin: 0.05, min_tasks: 5}
    steps: [5, 25, 50, 100]   # optional step-ups, each after step_tasks candidate tasks
    step_tasks: 50
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import Field, ValidationError, field_validator

from tether.core.money import usd_to_nusd
from tether.core.policy_schema import PolicyError, Problem, _Model, load_document
from tether.core.policy_schema import _problem as policy_problem
from tether.core.rollout import Rule


class RuleError(PolicyError):
    def __init__(self, problems: list[Problem], file: str = "<rule>") -> None:
        super().__init__(problems, file)
        self.code = "invalid_rule"


class GuardrailsModel(_Model):
    max_kills: int = Field(default=0, ge=0)
    max_policy_violation_rate: float | None = Field(default=0.0, ge=0, le=1)
    max_cost_per_task_usd: Decimal | None = Field(default=None, ge=0)
    max_error_rate_margin: float | None = Field(default=0.05, ge=0, le=1)
    min_tasks: int = Field(default=5, ge=1)


class RuleModel(_Model):
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    tau: float = Field(default=0.1, gt=0, le=1)
    promote_margin: float = Field(default=0.0, ge=0, lt=1)
    min_tasks_per_arm: int = Field(default=20, ge=1)
    max_tasks: int = Field(default=2000, ge=2)
    max_duration_s: float = Field(default=7 * 86400, gt=0)
    target_cost_usd: Decimal | None = Field(default=None, ge=0)
    interval_s: float = Field(default=60, ge=0.05)
    guardrails: GuardrailsModel = Field(default_factory=GuardrailsModel)
    steps: list[float] = Field(default_factory=list)
    step_tasks: int = Field(default=50, ge=1)

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if any(not 0 < s <= 100 for s in v) or v != sorted(set(v)):
            raise ValueError(
                "steps must be increasing percentages in (0, 100]. "
                "Fix: e.g. steps: [5, 25, 50, 100]"
            )
        return v

    def to_rule(self) -> Rule:
        g = self.guardrails

        def nusd(v: Decimal | None) -> int | None:
            return None if v is None else usd_to_nusd(v)

        return Rule(
            alpha=self.alpha,
            tau=self.tau,
            promote_margin=self.promote_margin,
            min_tasks_per_arm=self.min_tasks_per_arm,
            max_tasks=self.max_tasks,
            max_duration_s=self.max_duration_s,
            target_cost_nusd=nusd(self.target_cost_usd),
            max_kills=g.max_kills,
            max_policy_violation_rate=g.max_policy_violation_rate,
            max_cost_per_task_nusd=nusd(g.max_cost_per_task_usd),
            max_error_rate_margin=g.max_error_rate_margin,
            guardrail_min_tasks=g.min_tasks,
            steps=tuple(self.steps),
            step_tasks=self.step_tasks,
            interval_s=self.interval_s,
        )


def parse_rule(source: str, file: str = "<rule>") -> RuleModel:
    """Validates a rollout rule; an empty document is the default rule."""
    if not source.strip():
        return RuleModel()
    try:
        data, lines = load_document(source, file)
    except PolicyError as exc:
        raise RuleError(list(exc.problems), file) from None
    try:
        return RuleModel.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(e, lines) for e in exc.errors()]
        raise RuleError(sorted(problems, key=lambda p: (p.line, p.field)), file) from None


def _problem(err: Any, lines: Any) -> Problem:
    p = policy_problem(err, lines)
    if err["type"] == "extra_forbidden":
        model = GuardrailsModel if len(err["loc"]) > 1 else RuleModel
        return Problem(
            p.line, p.field, p.problem, "allowed keys here: " + ", ".join(model.model_fields)
        )
    if p.fix.startswith("see the policy example"):
        return Problem(p.line, p.field, p.problem, "see the rollout rule example in the README")
    return p
