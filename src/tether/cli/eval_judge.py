"""The assertions that run beside the agent rather than over its recorded run: Python predicates
(`module:function`) and LLM judges. A judge calls tether's own LLM gateway in runs of its own
(agent `tether-judge`), so its cost is recorded apart from the agent's; it is asked `repeats`
times, decided by majority, and its agreement is reported."""

from __future__ import annotations

import importlib
import json
import os
import re
from typing import Any

import httpx

from tether.core.assertions import Result
from tether.core.eval_suite import AssertionModel, JudgeDefaults, TaskModel
from tether.core.ids import make_id

JUDGE_AGENT = "tether-judge"
_PROMPT = """You are grading an AI agent's answer. TETHER-JUDGE
Rubric: {rubric}

Task given to the agent:
{task}

The agent's final output:
{output}

Reply with JSON only: {{"score": <a number from 0 to 1>, "reason": "<one sentence>"}}"""
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def predicate(a: AssertionModel, output: str | None, task: TaskModel) -> Result:
    """Calls `fn(output, task_input)`; it returns a bool, or (bool, reason)."""
    spec = a.output_predicate or ""
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        return Result(a.name, a.kind, False, f"cannot import {spec}: {exc}")
    try:
        got = fn(output, task.input)
    except Exception as exc:  # the user's predicate failing is that assertion's result
        return Result(a.name, a.kind, False, f"{spec} raised {type(exc).__name__}: {exc}")
    if isinstance(got, tuple):
        ok, why = bool(got[0]), str(got[1])
    else:
        ok, why = bool(got), f"{spec} returned {got!r}"
    return Result(a.name, a.kind, ok, why)


def _score(text: str) -> tuple[float | None, str]:
    try:
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("score"), int | float):
            return float(data["score"]), str(data.get("reason", ""))
    except ValueError:
        pass
    m = _NUMBER.search(text)
    return (float(m.group()), text[:200]) if m else (None, text[:200])


def judge(
    http: httpx.Client,
    a: AssertionModel,
    defaults: JudgeDefaults,
    task: TaskModel,
    output: str | None,
    *,
    eval_id: str,
    attempt: int,
) -> tuple[Result, list[str]]:
    """Asks the judge model `repeats` times through the gateway; returns the result and the
    judge's run ids (whose cost the server adds up)."""
    assert a.judge is not None
    model = a.judge.model or defaults.model
    repeats = a.judge.repeats or defaults.repeats
    prompt = _PROMPT.format(
        rubric=a.judge.rubric,
        output=output or "(no output)",
        task=task.input if isinstance(task.input, str) else json.dumps(task.input),
    )
    votes: list[bool] = []
    scores: list[float | None] = []
    reasons: list[str] = []
    run_ids: list[str] = []
    for i in range(repeats):
        run_id = make_id("run", os.urandom(12))
        label = f"{eval_id}:{task.id}:{attempt}:{a.name}:{i}"[:200]
        made = http.post(
            "/api/v1/runs",
            json={"id": run_id, "agent": JUDGE_AGENT, "version": model, "task_id": label},
        )
        made.raise_for_status()
        run_ids.append(run_id)
        resp = http.post(
            "/llm/v1/chat/completions",
            headers={"X-Tether-Run-Id": run_id},
            json={
                "model": model,
                "temperature": 0,
                "messages": [{"role": "user", "content": prompt}],
            },
        )
        if resp.status_code >= 400:
            reasons.append(f"judge call failed: HTTP {resp.status_code} {resp.text[:200]}")
            scores.append(None)
            votes.append(False)
            continue
        text = resp.json()["choices"][0]["message"].get("content") or ""
        score, why = _score(text)
        scores.append(score)
        reasons.append(why)
        votes.append(score is not None and score >= a.judge.threshold)
    yes = sum(votes)
    passed = yes * 2 > repeats  # a tie is not a majority
    agreement = max(yes, repeats - yes) / repeats
    why = (
        f"{yes}/{repeats} judge votes pass (threshold {a.judge.threshold:g}, agreement "
        f"{agreement:.0%}): {reasons[0] if reasons else ''}"
    )
    details: dict[str, Any] = {
        "model": model,
        "votes": votes,
        "scores": scores,
        "agreement": agreement,
    }
    return Result(a.name, a.kind, passed, why, details), run_ids
