"""`POST /api/v1/decide`: the policy decision for a tool that does not go through the MCP
gateway (the SDK's `@tether.tool` guard). An approval_required answer carries the hold's id;
wait for it with `GET /api/v1/approvals/{id}/wait`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from tether.core.errors import BadRequestError, NotFoundError, PermissionDeniedError
from tether.core.records import valid_run_id
from tether.gateway.mcp.guard import Guard
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.store import runs as run_store
from tether.store import tools as registry

router = APIRouter(tags=["governance"])


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
    agent = principal.agent
    if body.agent and body.agent != agent:
        if "admin" not in principal.scopes:
            raise PermissionDeniedError(f"this key speaks for agent {agent}, not {body.agent}")
        agent = body.agent
    if not agent:
        raise BadRequestError('name the agent: an admin key must send "agent" in the body')
    if body.run_id is not None and not valid_run_id(body.run_id):
        raise BadRequestError("run_id may hold letters, digits and _.:- (at most 64)")
    tags = registry.check_tags(body.tags)
    now = datetime.now(UTC)

    def work() -> Any:
        if body.run_id is not None:
            _check_run_owner(state, body.run_id, agent)
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
