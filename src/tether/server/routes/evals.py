"""`/api/v1/evals` and `/api/v1/gates`: create an eval from a suite, start and finish its attempts
(each a tagged run; the server reads what the gateways recorded and checks the assertions),
gate a version on the stored attempts, compare two evals."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from tether.core.assertions import Result, evaluate
from tether.core.errors import BadRequestError, NotFoundError
from tether.core.eval_compare import compare_evals
from tether.core.eval_suite import SuiteModel, TaskModel, parse_suite
from tether.core.evals import GateCriteria, gate, summarize_tasks
from tether.core.ids import make_id
from tether.core.money import usd_to_nusd
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.server.eval_batch import write_attempt
from tether.server.evals_flush import SPANS_WAIT_S, TakenSpans, take_spans, wait_stored
from tether.server.routes.eval_models import (
    ERRORS,
    AttemptFinished,
    AttemptOut,
    CompareOut,
    EvalDetail,
    EvalList,
    EvalOut,
    TaskOut,
    VerdictList,
    VerdictOut,
    attempt_out,
    eval_out,
    verdict_out,
)
from tether.store import eval_attempts as attempts
from tether.store import evals as store
from tether.store import gates
from tether.store.eval_spans import JUDGE_AGENT, SpansMissing

log = logging.getLogger("tether.evals")
router = APIRouter(tags=["evals"])


class EvalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(description="the suite YAML text", max_length=2_000_000)
    file: str = Field("<suite>", max_length=500, description="named in line-numbered errors")
    version: str = Field(min_length=1, max_length=200, examples=["v3"])
    repeats: int | None = Field(None, ge=1, le=100, description="defaults to the suite's")
    target_cost_usd: Decimal | None = Field(None, ge=0, description="defaults to the suite's")


class AttemptStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_id: str = Field(max_length=200)
    attempt: int = Field(ge=0, le=10_000)


class ExternalResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    passed: bool
    reason: str = Field(max_length=5000)
    details: dict[str, Any] = Field(default_factory=dict)


class AttemptFinish(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool = Field(description="the agent finished without an error of its own")
    output: str | None = Field(None, max_length=1_000_000)
    error: str | None = Field(None, max_length=10_000)
    agent_ms: float | None = Field(None, ge=0, description="the agent's own wall time")
    external: list[ExternalResult] = Field(
        default_factory=list, description="results of predicates and LLM judges, by name"
    )
    judge_run_ids: list[str] = Field(
        default_factory=list, description="runs the judges made through the LLM gateway"
    )
    run_id: str | None = Field(
        None,
        max_length=64,
        description="the attempt's run, as its start answered (spares a lookup; checked)",
    )
    next: AttemptStart | None = Field(
        None,
        description="an attempt to start in the same request once this one is checked, so that "
        "a runner makes one round trip per attempt; its run comes back in `next`",
    )


class GateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eval_id: str | None = None
    suite: str | None = None
    version: str | None = None
    baseline_eval_id: str | None = None
    baseline_version: str | None = None
    min_success: float | None = Field(None, ge=0, le=1, examples=[0.85])
    max_cost_per_task_usd: Decimal | None = Field(None, ge=0, examples=["0.50"])
    confidence: float = Field(0.95, ge=0.5, lt=1)


def _now() -> datetime:
    return datetime.now(UTC)


@router.post(
    "/evals",
    status_code=201,
    response_model=EvalOut,
    responses=ERRORS,
    summary="Create an eval of a suite against a version",
)
def create_eval(
    body: EvalCreate, state: State = Depends(get_state), who: Principal = Depends(require("admin"))
) -> EvalOut:
    suite = parse_suite(body.source, body.file)
    target = body.target_cost_usd if body.target_cost_usd is not None else suite.target_cost_usd
    row = store.create_eval(
        state.engine,
        eval_id=make_id("eval", os.urandom(12)),
        suite=suite,
        source=body.source,
        version=body.version,
        repeats=body.repeats or suite.repeats,
        target_cost_nusd=usd_to_nusd(target) if target is not None else None,
        actor=who.actor,
        now=_now(),
    )
    return eval_out(row)


@dataclass(frozen=True)
class Listing:
    """The filters every eval-area list takes: whose, and how many (newest first)."""

    agent: str | None
    limit: int


def listing(
    agent: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=500),
) -> Listing:
    return Listing(agent, limit)


@router.get("/evals", response_model=EvalList, responses=ERRORS, summary="List evals")
def list_evals(
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
    q: Listing = Depends(listing),
    suite: str | None = Query(None, max_length=200),
) -> EvalList:
    rows = store.list_evals(state.engine, agent=q.agent, suite=suite, limit=q.limit)
    return EvalList(items=[eval_out(r) for r in rows])


@router.get(
    "/evals/compare",
    response_model=CompareOut,
    responses=ERRORS,
    summary="Compare two evals task by task",
)
def compare(
    a: str = Query(description="the earlier (baseline) eval id"),
    b: str = Query(description="the later (candidate) eval id"),
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
) -> CompareOut:
    ea, eb = store.get_eval(state.engine, a), store.get_eval(state.engine, b)
    ra, rb = store.attempt_rows(state.engine, a), store.attempt_rows(state.engine, b)
    target = eb["target_cost_nusd"]
    out = compare_evals(
        store.core_attempts(ra), store.core_attempts(rb), target, _paths(ra), _paths(rb)
    )
    return CompareOut.build(eval_out(ea), eval_out(eb), out)


def _paths(rows: list[dict[str, Any]]) -> dict[str, list[tuple[str, ...]]]:
    out: dict[str, list[tuple[str, ...]]] = {}
    for r in rows:
        if r["status"] == "done":
            out.setdefault(r["task_id"], []).append(tuple(r["tools"] or ()))
    return out


@router.get(
    "/evals/{eval_id}",
    response_model=EvalDetail,
    responses=ERRORS,
    summary="An eval with its tasks and attempts",
)
def get_eval(
    eval_id: str, state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> EvalDetail:
    ev = store.get_eval(state.engine, eval_id)
    rows = store.attempt_rows(state.engine, eval_id)
    suite = _suite(ev["suite_source"])
    summaries = {
        s.task_id: s for s in summarize_tasks(store.core_attempts(rows), ev["target_cost_nusd"])
    }
    tasks = [TaskOut.build(t.id, summaries.get(t.id)) for t in suite.tasks]
    verdicts = gates.list_verdicts(state.engine, eval_id=eval_id)
    return EvalDetail(
        **eval_out(ev).model_dump(),
        task_list=tasks,
        attempts=[attempt_out(r) for r in rows],
        verdicts=[verdict_out(v) for v in verdicts],
    )


class SuiteSource(BaseModel):
    suite: str
    source: str = Field(description="the suite YAML exactly as the eval ran it")


@router.get(
    "/evals/{eval_id}/suite",
    response_model=SuiteSource,
    responses=ERRORS,
    summary="The suite text an eval ran (for --resume)",
)
def get_suite(
    eval_id: str, state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> SuiteSource:
    ev = store.get_eval(state.engine, eval_id)
    return SuiteSource(suite=ev["suite"], source=ev["suite_source"])


@lru_cache(maxsize=32)
def _suite(source: str) -> SuiteModel:
    """A stored suite parsed once per process: every attempt's start and finish reads it."""
    return parse_suite(source)


def _task(ev: dict[str, Any], task_id: str) -> TaskModel:
    task = next((t for t in _suite(ev["suite_source"]).tasks if t.id == task_id), None)
    if task is None:
        raise NotFoundError(f"suite {ev['suite']} has no task {task_id!r}")
    return task


@router.post(
    "/evals/{eval_id}/attempts",
    status_code=201,
    response_model=AttemptOut,
    responses=ERRORS,
    summary="Start an attempt: creates its tagged run",
)
async def start_attempt(
    eval_id: str,
    body: AttemptStart,
    state: State = Depends(get_state),
    _: Principal = Depends(require("admin")),
) -> AttemptOut:
    out, started = await write_attempt(state, _start, eval_id, body)
    _seed(state, started)
    return out


@dataclass(frozen=True)
class Started:
    """An attempt's run this process created, for the LLM gateway's run cache."""

    attempt: attempts.NextAttempt
    agent: str
    started_at: datetime


def _start(conn: Connection, eval_id: str, body: AttemptStart) -> tuple[AttemptOut, Started]:
    ev = store.fixed_eval(conn.engine, eval_id)
    a = _to_start(ev, body)
    now = _now()
    row = attempts.start_attempt_in(conn, ev, a, now)
    return attempt_out(row), Started(a, ev["agent"], now)


def _seed(state: State, started: Started | None) -> None:
    """The LLM gateway of this process learns the new run (its first call reads nothing)."""
    if started is not None and state.llm_gateway is not None:
        a = started.attempt
        state.llm_gateway.note_eval_run(a.run_id, started.started_at, started.agent, a.fixtures)


def _to_start(ev: dict[str, Any], body: AttemptStart) -> attempts.NextAttempt:
    """The attempt `body` names, checked against the eval's suite, with a new run id."""
    task = _task(ev, body.task_id)
    if body.attempt >= ev["repeats"]:
        raise BadRequestError(f"attempt must be below the eval's repeats ({ev['repeats']})")
    fixtures = task.fixtures.model_dump(exclude_defaults=True)
    return attempts.NextAttempt(
        body.task_id, body.attempt, make_id("run", os.urandom(12)), fixtures
    )


@router.post(
    "/evals/{eval_id}/attempts/{task_id}/{attempt}/finish",
    response_model=AttemptFinished,
    responses=ERRORS,
    summary="Finish an attempt: check its assertions (and start another, if asked)",
)
async def finish_attempt(
    eval_id: str,
    task_id: str,
    # bounded as AttemptStart's: a number past what the store holds is a 422, not a 500
    attempt: Annotated[int, Path(ge=0, le=10_000)],
    body: AttemptFinish,
    state: State = Depends(get_state),
    _: Principal = Depends(require("admin")),
) -> AttemptFinished:
    run_id = body.run_id
    if run_id is None:
        run_id = await run_in_threadpool(_run_of, state, eval_id, task_id, attempt)
    # The LLM gateway writes spans in batches: the check stores this run's (and its judges')
    # that are still queued itself, so it sees every call.
    ids = [run_id, *body.judge_run_ids]
    taken = await take_spans(state, ids)
    deadline = time.monotonic() + SPANS_WAIT_S
    strict = True
    try:
        while True:
            # one transaction: the spans, the check, the next attempt's start; `strict`, it
            # writes nothing while calls another process served have no span stored yet
            try:
                out, started = await write_attempt(
                    state, _finish, eval_id, task_id, attempt, body, run_id, taken, strict
                )
                break
            except SpansMissing:
                strict = await wait_stored(state, ids, taken, deadline)
    except BaseException:
        taken.give_back()
        raise
    taken.stored()
    _seed(state, started)
    if out.missing_spans:
        log.warning("attempt %d of %r in %s checked with %d gateway span(s) of run %s missing",
                    attempt, task_id, eval_id, out.missing_spans, run_id)  # fmt: skip
    return out


def _run_of(state: State, eval_id: str, task_id: str, attempt: int) -> str:
    rows = store.attempt_rows(state.engine, eval_id, task_id=task_id, attempt=attempt)
    if not rows:
        raise NotFoundError(f"no attempt {attempt} of {task_id!r} in {eval_id}; start it first")
    return str(rows[0]["run_id"])


def _finish(
    conn: Connection, eval_id: str, task_id: str, attempt: int, body: AttemptFinish,
    run_id: str, taken: TakenSpans, strict: bool = False,
) -> tuple[AttemptFinished, Started | None]:  # fmt: skip
    ev = store.fixed_eval(conn.engine, eval_id)
    task = _task(ev, task_id)
    then = _to_start(ev, body.next) if body.next is not None else None
    external = {
        e.name: Result(e.name, "external", e.passed, e.reason, e.details) for e in body.external
    }
    for a in task.assertions:
        if a.name in external:
            given = external[a.name]
            external[a.name] = Result(a.name, a.kind, given.passed, given.reason, given.details)
    now = _now()
    row = attempts.complete_in(
        conn,
        ev,
        task_id,
        attempt,
        ok=body.ok,
        output=body.output,
        error=body.error,
        agent_ms=body.agent_ms,
        check=lambda obs: evaluate(task.assertions, obs, external),
        judge_run_ids=body.judge_run_ids,
        judge_agent=JUDGE_AGENT,
        run_id=run_id,
        spans=taken.build(),
        then=then,
        now=now,
        strict=strict,
    )
    started = row.get("next")
    out = AttemptFinished(
        **attempt_out(row).model_dump(),
        next=attempt_out(started) if started else None,
        missing_spans=row.get("missing_spans", 0),
    )
    return out, Started(then, ev["agent"], now) if then is not None and started else None


@router.post(
    "/evals/{eval_id}/finish",
    response_model=EvalOut,
    responses=ERRORS,
    summary="Mark an eval finished",
)
def finish_eval(
    eval_id: str, state: State = Depends(get_state), _: Principal = Depends(require("admin"))
) -> EvalOut:
    store.get_eval(state.engine, eval_id)
    return eval_out(store.finish_eval(state.engine, eval_id, _now()))


def _resolve(
    state: State, eval_id: str | None, suite: str | None, version: str | None, what: str
) -> dict[str, Any]:
    if eval_id:
        return store.get_eval(state.engine, eval_id)
    if not (suite and version):
        raise BadRequestError(f"name the {what} by its eval id, or by suite and version")
    found = store.latest_eval(state.engine, suite, version)
    if found is None:
        raise NotFoundError(
            f"no eval of suite {suite} at version {version}; run `tether eval run` first"
        )
    return found


@router.post(
    "/gates",
    status_code=201,
    response_model=VerdictOut,
    responses=ERRORS,
    summary="Gate a version on its eval (and a baseline's); the verdict is stored",
)
def create_gate(
    body: GateRequest, state: State = Depends(get_state), who: Principal = Depends(require("admin"))
) -> VerdictOut:
    ev = _resolve(state, body.eval_id, body.suite, body.version, "version")
    base = None
    if body.baseline_eval_id or body.baseline_version:
        base = _resolve(
            state,
            body.baseline_eval_id,
            body.suite or ev["suite"],
            body.baseline_version,
            "baseline",
        )
        if base["suite_hash"] != ev["suite_hash"]:
            raise BadRequestError(
                f"the baseline eval {base['id']} ran a different suite text than {ev['id']}; "
                "run both versions on the same suite"
            )
    cost = body.max_cost_per_task_usd
    target = usd_to_nusd(cost) if cost is not None else ev["target_cost_nusd"]
    criteria = GateCriteria(body.min_success, target, body.confidence)
    cand = store.core_attempts(store.attempt_rows(state.engine, ev["id"]))
    baseline = store.core_attempts(store.attempt_rows(state.engine, base["id"])) if base else None
    verdict = gate(cand, criteria, baseline)
    row = gates.save_verdict(
        state.engine,
        verdict_id=make_id("gate", os.urandom(12)),
        ev=ev,
        baseline=base,
        criteria=criteria,
        verdict=verdict,
        actor=who.actor,
        now=_now(),
    )
    return verdict_out(row)


@router.get("/gates", response_model=VerdictList, responses=ERRORS, summary="List gate verdicts")
def list_gates(
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
    q: Listing = Depends(listing),
    outcome: Literal["pass", "fail", "inconclusive"] | None = None,
) -> VerdictList:
    rows = gates.list_verdicts(state.engine, agent=q.agent, outcome=outcome, limit=q.limit)
    return VerdictList(items=[verdict_out(r) for r in rows])
