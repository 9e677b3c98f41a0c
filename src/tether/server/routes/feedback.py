"""`/api/v1/runs/{id}/feedback` and `/scores`: human feedback and named scores on a run.

Admin keys may write on any run; `agent` keys only on runs of their own agent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from tether.core.errors import PermissionDeniedError
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.server.serialize import feedback_resource
from tether.store import feedback as fb_store
from tether.store import runs as run_store

router = APIRouter(tags=["feedback"])


class FeedbackIn(BaseModel):
    """thumbs: value 1 or -1. score: value from 0 to 1. comment: a comment, no value."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["thumbs", "score", "comment"]
    value: float | None = Field(None, examples=[1])
    comment: str | None = Field(None, max_length=fb_store.MAX_COMMENT)
    user: str | None = Field(None, max_length=200, description="defaults to the calling key")


class ScoreIn(BaseModel):
    """A named score, e.g. from an eval; it becomes the run's `score`."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, examples=["accuracy"])
    value: float = Field(examples=[0.92])
    comment: str | None = Field(None, max_length=fb_store.MAX_COMMENT)
    span_id: str | None = Field(None, max_length=16)
    source: Literal["api", "eval", "sdk"] = "api"


class FeedbackOut(BaseModel):
    id: str
    run_id: str
    kind: str
    value: float | None
    comment: str | None
    user: str | None
    created_at: str


class ScoreOut(BaseModel):
    id: str
    run_id: str
    span_id: str | None
    name: str
    value: float
    source: str
    comment: str | None
    created_at: str


class RunFeedback(BaseModel):
    feedback: list[FeedbackOut]
    scores: list[ScoreOut]


def _check_owner(state: State, principal: Principal, run_id: str) -> None:
    """404 for an unknown run; 403 when an agent key writes on another agent's run."""
    run = run_store.get_run(state.engine, run_id)
    if principal.has("admin"):
        return
    if principal.agent is None or run["agent"] != principal.agent:
        raise PermissionDeniedError(
            f"this key may only score runs of agent {principal.agent or '(none)'}",
            code="wrong_agent",
        )


@router.post(
    "/runs/{run_id}/feedback", status_code=201, response_model=FeedbackOut,
    summary="Add human feedback to a run",
)  # fmt: skip
async def add_feedback(
    run_id: str,
    body: FeedbackIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        _check_owner(state, principal, run_id)
        return fb_store.add_feedback(
            state.engine, run_id, kind=body.kind, value=body.value, comment=body.comment,
            user=body.user or principal.actor, now=datetime.now(UTC),
        )  # fmt: skip

    return feedback_resource(await run_in_threadpool(work))


@router.post(
    "/runs/{run_id}/scores", status_code=201, response_model=ScoreOut,
    summary="Add a named score to a run",
)  # fmt: skip
async def add_score(
    run_id: str,
    body: ScoreIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        _check_owner(state, principal, run_id)
        return fb_store.add_score(
            state.engine, run_id, name=body.name, value=body.value, source=body.source,
            comment=body.comment, span_id=body.span_id, now=datetime.now(UTC),
        )  # fmt: skip

    return feedback_resource(await run_in_threadpool(work))


@router.get(
    "/runs/{run_id}/feedback", response_model=RunFeedback,
    summary="A run's feedback and scores, oldest first",
)  # fmt: skip
def list_feedback(
    run_id: str, state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> dict[str, Any]:
    run_store.get_run(state.engine, run_id)
    return {
        "feedback": [feedback_resource(f) for f in fb_store.list_feedback(state.engine, run_id)],
        "scores": [feedback_resource(s) for s in fb_store.list_scores(state.engine, run_id)],
    }
