"""`/api/v1/rollouts`, `/api/v1/route` and `/api/v1/agents/{agent}/tasks`: canary rollouts of
agent versions (start, status, promote, roll back, pause, resume, evaluate now), the sticky
routing answer for a task, and forwarding a task to the chosen version's HTTP endpoint."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from tether.core.errors import NotFoundError, UpstreamError
from tether.core.ids import make_id
from tether.core.records import RunAttribution
from tether.core.rollout import route
from tether.core.rollout_rule import parse_rule
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.server.rollout_rule_apply import apply, decide, event_body
from tether.server.routes.eval_models import ERRORS, RateOut, rate_out
from tether.store import rollouts as store
from tether.store import runs as run_store
from tether.store.evals import end_run

router = APIRouter(tags=["rollouts"])
FORWARD_TIMEOUT_S = 300.0
_CACHE_TTL_S = 1.0


class RolloutStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent: str = Field(max_length=200, examples=["support-bot"])
    baseline: str = Field(max_length=200, examples=["v2"])
    candidate: str = Field(max_length=200, examples=["v3"])
    percent: float = Field(10, gt=0, le=100, description="the candidate's share of tasks")
    rule: str = Field("", max_length=200_000, description="the rule YAML; empty: the defaults")
    rule_file: str | None = Field(None, max_length=500)


class Change(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=2000)


class EventOut(BaseModel):
    at: str
    kind: str
    status: str
    percent: float
    reason: str | None
    actor: str | None


class ArmOut(BaseModel):
    version: str
    role: str = Field(description="baseline | candidate")
    success: RateOut = Field(description="success at target cost, Wilson 95 %")
    errors: int
    kills: int
    policy_violations: int
    cost_per_task_usd: float | None


class RolloutOut(BaseModel):
    id: str
    agent: str
    baseline: str
    candidate: str
    percent: float
    status: str = Field(description="running | paused | promoted | rolled_back | inconclusive")
    reason: str | None
    rule: dict[str, Any]
    decision: dict[str, Any] | None = Field(description="the rule's last evaluation")
    started_at: str
    ended_at: str | None
    arms: list[ArmOut] = Field(default_factory=list)
    events: list[EventOut] = Field(default_factory=list)


class RolloutList(BaseModel):
    items: list[RolloutOut]
    next_cursor: str | None = None


class RouteOut(BaseModel):
    agent: str
    task_id: str
    version: str | None = Field(description="None when the agent has no rollout")
    rollout_id: str | None
    status: str | None


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2000, examples=["http://127.0.0.1:8100/task"])


class TaskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_id: str | None = Field(None, max_length=200, description="defaults to task_<random>")
    input: Any = None
    user: str | None = Field(None, max_length=200)


class TaskOut(BaseModel):
    run_id: str
    task_id: str
    version: str
    status_code: int = Field(description="the agent endpoint's HTTP status")
    response: Any


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def rollout_out(state: State, ro: dict[str, Any], detail: bool = False) -> RolloutOut:
    rule = parse_rule(ro["rule_source"], ro["rule_file"] or "<rule>")
    out = RolloutOut(
        id=ro["id"],
        agent=ro["agent"],
        baseline=ro["baseline"],
        candidate=ro["candidate"],
        percent=ro["percent"],
        status=ro["status"],
        reason=ro["reason"],
        rule=json.loads(rule.model_dump_json()),
        decision=ro["decision"],
        started_at=_iso(ro["started_at"]) or "",
        ended_at=_iso(ro["ended_at"]),
    )
    if detail:
        target = rule.to_rule().target_cost_nusd
        arms = state.arms_cache.arms(state.engine, ro, target, datetime.now(UTC))
        for role, version in (("baseline", ro["baseline"]), ("candidate", ro["candidate"])):
            a = arms[version]
            cost = a.mean_cost_nusd()
            out.arms.append(
                ArmOut(
                    version=version,
                    role=role,
                    success=rate_out(a.successes, a.tasks),
                    errors=a.errors,
                    kills=a.kills,
                    policy_violations=a.policy_violations,
                    cost_per_task_usd=None if cost is None else cost / 1e9,
                )
            )
        out.events = [
            EventOut(
                at=_iso(e["at"]) or "",
                kind=e["kind"],
                status=e["status"],
                percent=e["percent"],
                reason=e["reason"],
                actor=e["actor"],
            )
            for e in store.events(state.engine, ro["id"])
        ]
    return out


class RouteCache:
    """The newest rollout per agent, for a second: routing is on every task's path."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[float, dict[str, Any] | None]] = {}

    def get(self, state: State, agent: str) -> dict[str, Any] | None:
        hit = self._rows.get(agent)
        now = time.monotonic()
        if hit is not None and now - hit[0] < _CACHE_TTL_S:
            return hit[1]
        ro = store.latest_for(state.engine, agent)
        self._rows[agent] = (now, ro)
        return ro

    def forget(self, agent: str) -> None:
        self._rows.pop(agent, None)


def _cache(state: State) -> RouteCache:
    if state.route_cache is None:
        state.route_cache = RouteCache()
    cache: RouteCache = state.route_cache
    return cache


def choose(state: State, agent: str, task_id: str) -> RouteOut:
    ro = _cache(state).get(state, agent)
    if ro is None:
        return RouteOut(agent=agent, task_id=task_id, version=None, rollout_id=None, status=None)
    version = route(ro["status"], ro["id"], ro["percent"], ro["baseline"], ro["candidate"], task_id)
    return RouteOut(
        agent=agent, task_id=task_id, version=version, rollout_id=ro["id"], status=ro["status"]
    )


def announce(state: State, ro: dict[str, Any], kind: str, actor: str) -> None:
    _cache(state).forget(ro["agent"])
    event, text = event_body(ro, kind, actor)
    state.webhooks.announce_event(event, text)


@router.post(
    "/rollouts",
    status_code=201,
    response_model=RolloutOut,
    responses=ERRORS,
    summary="Start a canary rollout",
)
async def start_rollout(
    body: RolloutStart,
    state: State = Depends(get_state),
    who: Principal = Depends(require("admin")),
) -> RolloutOut:
    parse_rule(body.rule, body.rule_file or "<rule>")  # 400 with lines before anything changes
    ro = await run_in_threadpool(
        lambda: store.start(
            state.engine,
            rollout_id=make_id("ro", os.urandom(12)),
            agent=body.agent,
            baseline=body.baseline,
            candidate=body.candidate,
            percent=body.percent,
            rule_source=body.rule,
            rule_file=body.rule_file,
            actor=who.actor,
            now=datetime.now(UTC),
        )
    )
    announce(state, ro, "started", who.actor)
    return rollout_out(state, ro, detail=True)


@router.get("/rollouts", response_model=RolloutList, responses=ERRORS, summary="List rollouts")
def list_rollouts(
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
    agent: str | None = Query(None, max_length=200),
    active: bool = False,
    limit: int = Query(50, ge=1, le=500),
) -> RolloutList:
    rows = store.list_rollouts(state.engine, agent=agent, active=active, limit=limit)
    return RolloutList(items=[rollout_out(state, r, detail=True) for r in rows])


@router.get(
    "/rollouts/{rollout_id}",
    response_model=RolloutOut,
    responses=ERRORS,
    summary="A rollout with live figures per version and its events",
)
def get_rollout(
    rollout_id: str, state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> RolloutOut:
    ro = store.get(state.engine, rollout_id)
    out = rollout_out(state, ro, detail=True)
    if ro["status"] == "running":  # what the rule would say now, and why
        d = decide(state.engine, ro, datetime.now(UTC), state.arms_cache)
        out.decision = {**(ro["decision"] or {}), "now": {"action": d.action, "reason": d.reason}}
    return out


_ACTIONS = {
    "promote": "promoted",
    "rollback": "rolled_back",
    "pause": "paused",
    "resume": "resumed",
}


def _change_route(action: str) -> Any:
    kind = _ACTIONS[action]

    async def change(
        rollout_id: str,
        body: Change | None = None,
        state: State = Depends(get_state),
        who: Principal = Depends(require("admin")),
    ) -> RolloutOut:
        reason = (body.reason if body else None) or f"{action} by {who.actor}"
        ro = await run_in_threadpool(
            lambda: store.transition(
                state.engine,
                rollout_id,
                kind,
                reason=reason,
                actor=who.actor,
                now=datetime.now(UTC),
            )
        )
        announce(state, ro, kind, who.actor)
        return rollout_out(state, ro, detail=True)

    change.__name__ = f"{action}_rollout"
    return change


for _action in _ACTIONS:
    router.add_api_route(
        f"/rollouts/{{rollout_id}}/{_action}",
        _change_route(_action),
        methods=["POST"],
        response_model=RolloutOut,
        responses=ERRORS,
        summary=f"{_action.capitalize()} a rollout (audited)",
    )


@router.post(
    "/rollouts/{rollout_id}/evaluate",
    response_model=RolloutOut,
    responses=ERRORS,
    summary="Apply the rule now (the background loop does it every interval)",
)
async def evaluate_rollout(
    rollout_id: str, state: State = Depends(get_state), _: Principal = Depends(require("admin"))
) -> RolloutOut:
    ro, kind = await run_in_threadpool(apply, state.engine, rollout_id, None, state.arms_cache)
    if kind is not None:
        announce(state, ro, kind, "rollout-rule")
    return rollout_out(state, ro, detail=True)


@router.get(
    "/route",
    response_model=RouteOut,
    responses=ERRORS,
    summary="Which version a task goes to (sticky by task id)",
)
def get_route(
    agent: str = Query(max_length=200),
    task_id: str = Query(max_length=200),
    state: State = Depends(get_state),
    _: Principal = Depends(require("read", "agent")),
) -> RouteOut:
    return choose(state, agent, task_id)


@router.put(
    "/agents/{agent}/versions/{version}/endpoint",
    response_model=EndpointIn,
    responses=ERRORS,
    summary="Register the HTTP endpoint that runs this version",
)
def put_endpoint(
    agent: str,
    version: str,
    body: EndpointIn,
    state: State = Depends(get_state),
    _: Principal = Depends(require("admin")),
) -> EndpointIn:
    store.register_endpoint(state.engine, agent, version, body.url, datetime.now(UTC))
    return body


@router.post(
    "/agents/{agent}/tasks",
    response_model=TaskOut,
    responses=ERRORS,
    summary="Route a task and forward it to the chosen version's endpoint",
)
async def post_task(
    agent: str,
    body: TaskIn,
    state: State = Depends(get_state),
    _: Principal = Depends(require("admin", "agent")),
) -> TaskOut:
    task_id = body.task_id or make_id("task", os.urandom(9))
    routed = choose(state, agent, task_id)
    version = routed.version
    if version is None:
        raise NotFoundError(f"{agent} has no rollout; start one with `tether rollout start`")
    url = await run_in_threadpool(store.endpoint_for, state.engine, agent, version)
    if url is None:
        raise NotFoundError(
            f"{agent} {version} has no endpoint; register it with PUT "
            f"/api/v1/agents/{agent}/versions/{version}/endpoint"
        )
    run_id = make_id("run", os.urandom(12))
    attribution = RunAttribution(agent=agent, version=version, task_id=task_id, user=body.user)
    text = (
        body.input if isinstance(body.input, str) or body.input is None else json.dumps(body.input)
    )
    await run_in_threadpool(
        lambda: run_store.create_run(
            state.engine,
            run_id=run_id,
            attribution=attribution,
            input=text,
            now=datetime.now(UTC),
            source="api",
        )
    )
    headers = {
        "X-Tether-Run-Id": run_id,
        "X-Tether-Task-Id": task_id,
        "X-Tether-Agent": agent,
        "X-Tether-Agent-Version": version,
    }
    try:
        async with httpx.AsyncClient(timeout=FORWARD_TIMEOUT_S) as client:
            resp = await client.post(
                url,
                json={"task_id": task_id, "input": body.input, "run_id": run_id},
                headers=headers,
            )
    except httpx.HTTPError as exc:
        why = f"endpoint failed: {type(exc).__name__}"
        await run_in_threadpool(
            lambda: end_run(
                state.engine, run_id, ok=False, output=None, error=why, now=datetime.now(UTC)
            )
        )
        raise UpstreamError(
            f"{agent} {version} endpoint failed ({type(exc).__name__}); is it up?",
            code="agent_endpoint_failed",
        ) from None
    try:
        payload: Any = resp.json()
    except ValueError:
        payload = resp.text
    ok = resp.is_success
    output = resp.text if ok else None
    await run_in_threadpool(
        lambda: end_run(
            state.engine,
            run_id,
            ok=ok,
            output=output,
            error=None if ok else f"HTTP {resp.status_code}",
            now=datetime.now(UTC),
        )
    )
    return TaskOut(
        run_id=run_id,
        task_id=task_id,
        version=version,
        status_code=resp.status_code,
        response=payload,
    )
