"""The response models of the eval, gate and rollout routes, and their builders from store rows
(money out as USD numbers, timestamps ISO 8601 UTC)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from tether.core.eval_compare import EvalDiff
from tether.core.evals import TaskSummary
from tether.core.money import nusd_to_float
from tether.core.stats import success_rate


class ErrorDetail(BaseModel):
    type: str = Field(examples=["invalid_request"])
    code: str = Field(examples=["invalid_suite"])
    message: str = Field(examples=["suite.yaml:12: tasks[0].assert[1]: unknown key `tool_caled`"])
    details: dict[str, Any] | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "bad input (an invalid suite lists FILE:LINE errors)"},
    401: {"model": ErrorOut, "description": "no or unknown API key"},
    403: {"model": ErrorOut, "description": "the key lacks the scope"},
    404: {"model": ErrorOut, "description": "no such eval, attempt, rollout or run"},
    409: {
        "model": ErrorOut,
        "description": "the state does not allow it (attempt done, rollout "
        "ended, another rollout active)",
    },
    502: {"model": ErrorOut, "description": "the agent's endpoint failed (task forwarding)"},
}


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


class RateOut(BaseModel):
    successes: int
    total: int
    rate: float | None
    low: float | None = Field(description="Wilson 95 % lower bound")
    high: float | None


def rate_out(k: int, n: int) -> RateOut:
    r = success_rate(k, n)
    return RateOut(successes=k, total=n, rate=r.rate, low=r.low, high=r.high)


class EvalOut(BaseModel):
    id: str = Field(examples=["eval_0k3..."])
    suite: str
    agent: str
    version: str
    status: str = Field(description="running | finished")
    repeats: int
    tasks: int
    target_cost_usd: float | None
    attempts_done: int
    attempts_passed: int
    success: RateOut = Field(description="success at target cost over finished attempts")
    cost_usd: float
    judge_cost_usd: float = Field(description="the LLM judges' cost, apart from the agent's")
    created_by: str | None
    created_at: str
    finished_at: str | None


def eval_out(r: dict[str, Any], passed_at_target: int | None = None) -> EvalOut:
    return EvalOut(
        id=r["id"],
        suite=r["suite"],
        agent=r["agent"],
        version=r["version"],
        status=r["status"],
        repeats=r["repeats"],
        tasks=r["tasks"],
        target_cost_usd=nusd_to_float(r["target_cost_nusd"]),
        attempts_done=r["attempts_done"],
        attempts_passed=r["attempts_passed"],
        success=rate_out(
            r["attempts_passed"] if passed_at_target is None else passed_at_target,
            r["attempts_done"],
        ),
        cost_usd=nusd_to_float(r["cost_nusd"]) or 0.0,
        judge_cost_usd=nusd_to_float(r["judge_cost_nusd"]) or 0.0,
        created_by=r["created_by"],
        created_at=_iso(r["created_at"]) or "",
        finished_at=_iso(r["finished_at"]),
    )


class EvalList(BaseModel):
    items: list[EvalOut]
    next_cursor: str | None = None


class AssertionOut(BaseModel):
    name: str
    kind: str
    passed: bool
    reason: str
    details: dict[str, Any] | None = None


class AttemptOut(BaseModel):
    eval_id: str
    task_id: str
    attempt: int
    run_id: str = Field(description="the tether run this attempt was")
    status: str = Field(description="running | done")
    passed: bool | None
    cost_usd: float
    judge_cost_usd: float
    duration_ms: float | None
    agent_ms: float | None
    results: list[AssertionOut]
    tools: list[str]
    error: str | None
    started_at: str
    ended_at: str | None


class AttemptFinished(AttemptOut):
    next: AttemptOut | None = Field(
        None, description="the attempt the finish was asked to start, with its run (null if none "
        "was asked for, or it was already done)",
    )  # fmt: skip
    missing_spans: int = Field(
        0, description="LLM calls the gateways admitted for the run (or its judges') whose spans "
        "were still not stored when the check gave up waiting for them (0: it saw every call)",
    )  # fmt: skip


def attempt_out(r: dict[str, Any]) -> AttemptOut:
    return AttemptOut(
        eval_id=r["eval_id"],
        task_id=r["task_id"],
        attempt=r["attempt"],
        run_id=r["run_id"],
        status=r["status"],
        passed=r["passed"],
        cost_usd=nusd_to_float(r["cost_nusd"]) or 0.0,
        judge_cost_usd=nusd_to_float(r["judge_cost_nusd"]) or 0.0,
        duration_ms=r["duration_ms"],
        agent_ms=r["agent_ms"],
        results=[AssertionOut(**x) for x in r["results"] or []],
        tools=list(r["tools"] or []),
        error=r["error"],
        started_at=_iso(r["started_at"]) or "",
        ended_at=_iso(r["ended_at"]),
    )


class TaskOut(BaseModel):
    task_id: str
    n: int
    passes: int = Field(description="attempts that succeeded at target cost")
    pass_at_k: float | None
    pass_hat_k: float | None
    mean_cost_usd: float | None
    failing: dict[str, int] = Field(description="assertion name -> attempts it failed")

    @classmethod
    def build(cls, task_id: str, s: TaskSummary | None) -> TaskOut:
        if s is None:
            return cls(
                task_id=task_id,
                n=0,
                passes=0,
                pass_at_k=None,
                pass_hat_k=None,
                mean_cost_usd=None,
                failing={},
            )
        return cls(
            task_id=task_id,
            n=s.n,
            passes=s.passes,
            pass_at_k=s.pass_at_k,
            pass_hat_k=s.pass_hat_k,
            mean_cost_usd=nusd_to_float(s.mean_cost_nusd),
            failing=dict(s.failing),
        )


class ComparisonOut(BaseModel):
    metric: str
    pairs: int = Field(description="paired attempts (attempt i of a task on both sides)")
    worse: int = Field(description="pairs where only the baseline succeeded")
    better: int = Field(description="pairs where only the candidate succeeded")
    p_value: float = Field(description="one-sided paired sign-flip test over the tasks")
    p_holm: float
    significant: bool
    tasks: int = Field(0, description="tasks the pairs fall in (the test's unit)")


class VerdictOut(BaseModel):
    id: str
    suite: str
    agent: str
    version: str
    eval_id: str
    baseline_version: str | None
    baseline_eval_id: str | None
    outcome: str = Field(description="pass | fail | inconclusive")
    exit_code: int = Field(description="0 pass, 1 fail, 3 inconclusive")
    criteria: dict[str, Any]
    success: RateOut
    more_attempts: int | None = Field(description="when inconclusive: attempts still needed")
    reasons: list[str]
    comparisons: list[ComparisonOut]
    regressions: list[str]
    actor: str | None
    created_at: str


def verdict_out(r: dict[str, Any]) -> VerdictOut:
    crit = dict(r["criteria"])
    crit["max_cost_per_task_usd"] = nusd_to_float(crit.pop("max_cost_nusd", None))
    return VerdictOut(
        id=r["id"],
        suite=r["suite"],
        agent=r["agent"],
        version=r["version"],
        eval_id=r["eval_id"],
        baseline_version=r["baseline_version"],
        baseline_eval_id=r["baseline_eval_id"],
        outcome=r["outcome"],
        exit_code=r["exit_code"],
        criteria=crit,
        success=rate_out(r["successes"], r["total"]),
        more_attempts=r["more_attempts"],
        reasons=list(r["reasons"]),
        comparisons=[ComparisonOut(**c) for c in r["comparisons"] or []],
        regressions=list(r["regressions"] or []),
        actor=r["actor"],
        created_at=_iso(r["created_at"]) or "",
    )


class VerdictList(BaseModel):
    items: list[VerdictOut]
    next_cursor: str | None = None


class EvalDetail(EvalOut):
    task_list: list[TaskOut]
    attempts: list[AttemptOut]
    verdicts: list[VerdictOut]


class TaskDiffOut(BaseModel):
    task_id: str
    change: str = Field(description="regressed | improved | same | only_a | only_b")
    a: RateOut
    b: RateOut
    a_cost_usd: float | None
    b_cost_usd: float | None
    a_path: list[str] | None = Field(description="the most common tool sequence in A")
    b_path: list[str] | None
    path_changed: bool
    newly_failing: list[str]


class CompareOut(BaseModel):
    a: EvalOut
    b: EvalOut
    tasks: list[TaskDiffOut]
    regressions: list[str]
    improvements: list[str]
    comparisons: list[ComparisonOut]
    a_cost_usd: float
    b_cost_usd: float

    @classmethod
    def build(cls, a: EvalOut, b: EvalOut, d: EvalDiff) -> CompareOut:
        return cls(
            a=a,
            b=b,
            tasks=[
                TaskDiffOut(
                    task_id=t.task_id,
                    change=t.change,
                    a=rate_out(t.a_passes, t.a_n),
                    b=rate_out(t.b_passes, t.b_n),
                    a_cost_usd=nusd_to_float(t.a_cost_nusd),
                    b_cost_usd=nusd_to_float(t.b_cost_nusd),
                    a_path=list(t.a_path) if t.a_path is not None else None,
                    b_path=list(t.b_path) if t.b_path is not None else None,
                    path_changed=t.path_changed,
                    newly_failing=list(t.newly_failing),
                )
                for t in d.tasks
            ],
            regressions=[t.task_id for t in d.regressions],
            improvements=[t.task_id for t in d.improvements],
            comparisons=[ComparisonOut(**c.__dict__) for c in d.comparisons],
            a_cost_usd=nusd_to_float(d.a_cost_nusd) or 0.0,
            b_cost_usd=nusd_to_float(d.b_cost_nusd) or 0.0,
        )
