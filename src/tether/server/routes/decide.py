"""The governed path for tools that do not go through the MCP gateway (the SDK's
`@tether.tool`): `POST /api/v1/decide` decides a call exactly as /mcp does (the same guard:
registry, policy, value provenance, rate limits, holds, audit); an approval_required answer
carries the hold's id (wait with `GET /api/v1/approvals/{id}/wait`).
`POST /api/v1/runs/{run_id}/values` records what a tool returned into the run, as the gateway
records a forwarded call's result: untrusted output as untrusted values, other output as
trusted values (minus what it echoed), and the tool's tags on the run.
Both take `run`, the run's declared input and attribution, which the SDK sends on its first
call of a run (its spans reach tether only when the run ends): the task input is trusted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from tether.core.errors import BadRequestError, NotFoundError, PermissionDeniedError
from tether.core.records import RunAttribution, valid_run_id
from tether.core.semtext import redact_text
from tether.gateway.mcp.guard import Guard
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.server.openapi import errors
from tether.store import runs as run_store
from tether.store import tools as registry

router = APIRouter(tags=["governance"])
UNTRUSTED = "untrusted"


class RunDeclared(BaseModel):
    """What `tether.run(...)` was given: the task input (a trusted source) and attribution."""

    model_config = ConfigDict(extra="forbid")
    input: Any = Field(None, description="text, or any JSON (stored as its JSON text)")
    task_id: str | None = Field(None, max_length=200)
    user: str | None = Field(None, max_length=200)
    version: str | None = Field(None, max_length=200)


class DecideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool: str = Field(min_length=1, max_length=300, examples=["billing.refund"])
    run_id: str | None = Field(None, max_length=64)
    arguments: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(
        default_factory=list,
        examples=[["irreversible"]],
        description="read | write | egress | untrusted | irreversible",
    )
    agent: str | None = Field(
        None, max_length=200, description="only for admin keys; agent keys speak for their agent"
    )
    run: RunDeclared | None = Field(None, description="the run's input and attribution")


class ValuesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool: str = Field(min_length=1, max_length=300, examples=["web.fetch"])
    tags: list[str] = Field(default_factory=list, examples=[["untrusted"]])
    arguments: dict[str, Any] = Field(default_factory=dict)
    output: Any = Field(None, description="what the tool returned (text or JSON)")
    error: bool = Field(False, description="the tool raised; its output is not indexed as trusted")
    agent: str | None = Field(None, max_length=200, description="only for admin keys")
    run: RunDeclared | None = None


class ValuesOut(BaseModel):
    run_id: str
    tags: list[str] = Field(description="the tags the result gave the run")
    untrusted: bool


class DecideOut(BaseModel):
    decision: Literal["allow", "deny", "approval_required", "rate_limited"]
    approval_id: str | None
    reason: str
    rule: str
    retry_after_s: float | None


def guard_of(state: State) -> Guard:
    guard = state.guard
    return guard


@router.post("/decide", response_model=DecideOut, summary="Decide a tool call (SDK guard)")
async def decide(
    body: DecideIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> dict[str, Any]:
    agent = _agent(principal, body.agent)
    if body.run_id is not None and not valid_run_id(body.run_id):
        raise BadRequestError("run_id may hold letters, digits and _.:- (at most 64)")
    tags = registry.check_tags(body.tags)
    now = datetime.now(UTC)

    def work() -> Any:
        if body.run_id is not None:
            _check_run_owner(state, body.run_id, agent)
            _declare(state, body.run_id, agent, body.run, now)
        tool = registry.ensure_sdk_tool(state.engine, body.tool, tags, now=now)
        extra = tags if tool.kind == "sdk" else ()
        verdict = guard_of(state).check(agent=agent, run_id=body.run_id, name=body.tool,
                                        arguments=body.arguments, now=now, actor=principal.actor,
                                        extra_tags=extra)  # fmt: skip
        if verdict.outcome == "allow":
            # the SDK runs the tool next; an untrusted one's output enters the run
            guard_of(state).mark_returned(body.run_id, verdict.decision.tags, now=now, agent=agent)
        return verdict

    verdict = await run_in_threadpool(work)
    if verdict.approval is not None:
        state.webhooks.announce(verdict.approval)
    return verdict.to_dict()  # type: ignore[no-any-return]


@router.post("/runs/{run_id}/values", response_model=ValuesOut, responses=errors(403),
             summary="Record what a tool returned into a run (SDK)")  # fmt: skip
async def record_values(
    run_id: str,
    body: ValuesIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> dict[str, Any]:
    agent = _agent(principal, body.agent)
    if not valid_run_id(run_id):
        raise BadRequestError("run_id may hold letters, digits and _.:- (at most 64)")
    claimed = frozenset(registry.check_tags(body.tags))
    now = datetime.now(UTC)

    def work() -> dict[str, Any]:
        _check_run_owner(state, run_id, agent)
        _declare(state, run_id, agent, body.run, now)
        tool = registry.get_tool(state.engine, body.tool)
        # a registered tool's tags stand; the SDK may only add distrust to them
        if tool is None or tool.kind == "sdk":
            tags = claimed | frozenset(tool.tags if tool else ())
        else:
            tags = frozenset(tool.tags) | (claimed & {UNTRUSTED})
        untrusted = UNTRUSTED in tags
        guard = guard_of(state)
        guard.mark_returned(run_id, tags, now=now, agent=agent)
        if body.output is not None and (untrusted or not body.error):
            guard.record_values(run_id, source=body.tool, output=body.output,
                                untrusted=untrusted, arguments=body.arguments, now=now,
                                agent=agent)  # fmt: skip
        return {"run_id": run_id, "tags": sorted(tags), "untrusted": untrusted}

    return await run_in_threadpool(work)


def _agent(principal: Principal, named: str | None) -> str:
    """The agent a call speaks for: the key's own, or (admin keys only) the one named."""
    agent = principal.agent
    if named and named != agent:
        if "admin" not in principal.scopes:
            raise PermissionDeniedError(f"this key speaks for agent {agent}, not {named}")
        agent = named
    if not agent:
        raise BadRequestError('name the agent: an admin key must send "agent" in the body')
    return agent


def _declare(state: State, run_id: str, agent: str, run: RunDeclared | None, now: datetime) -> None:
    """Creates the run if new and keeps its declared input (redacted), a trusted source."""
    if run is None:
        return
    raw = run.input
    text = raw if raw is None or isinstance(raw, str) else json.dumps(raw)
    if text is not None:
        text = redact_text(text, tuple(state.settings.redact_fields))
    attribution = RunAttribution(agent=agent, version=run.version, task_id=run.task_id,
                                 user=run.user)  # fmt: skip
    run_store.declare_run(state.engine, run_id, attribution=attribution, input=text, now=now)


def _check_run_owner(state: State, run_id: str, agent: str) -> None:
    """A decision may hold or taint only a run of the deciding agent (a new run id is fine)."""
    try:
        owner = run_store.get_run(state.engine, run_id)["agent"]
    except NotFoundError:
        return
    if owner is not None and owner != agent:
        raise PermissionDeniedError(
            f"run {run_id} belongs to agent {owner}, not {agent}", code="wrong_agent"
        )
