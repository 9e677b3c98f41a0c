"""`/api/v1/policies`: apply a boundary policy (YAML or JSON body), check one, read the latest
or any version, its history and a diff between versions. Writes need the admin scope."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tether.core.errors import BadRequestError, NotFoundError
from tether.core.policy import Policy, lint
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.store import policies as policy_store

router = APIRouter(tags=["policies"])
# versions are stored as 32-bit integers: a larger one is a 400, not a database overflow
MAX_VERSION = 2**31 - 1

_BODY_DOC = (
    "The policy YAML as the body (`Content-Type: application/yaml` or `text/plain`), or JSON "
    '`{"source": "<yaml>", "file": "name.yaml"}`. Errors are HTTP 400 with one line per problem: '
    "`FILE:LINE: field: problem. Fix: ...`, and `details.errors` as a list."
)


class Applied(BaseModel):
    agent: str = Field(examples=["invoice-triage"])
    version: int = Field(examples=[3])
    changed: bool = Field(description="false when the text equals the current version")
    warnings: list[str] = Field(default_factory=list)


class Checked(BaseModel):
    ok: bool
    agent: str
    warnings: list[str]


class PolicyVersionOut(BaseModel):
    agent: str
    version: int
    sha256: str
    applied_by: str | None
    created_at: str


class PolicyDetail(PolicyVersionOut):
    source: str
    document: dict[str, Any]


class PolicyList(BaseModel):
    items: list[PolicyVersionOut]
    next_cursor: str | None = None


class PolicyDiff(BaseModel):
    agent: str
    from_version: int
    to_version: int
    diff: str


async def _source(request: Request) -> tuple[str, str]:
    raw = await request.body()
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise BadRequestError("the policy must be UTF-8 text") from None
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f'invalid JSON body: {exc.msg}; send {{"source": "<policy YAML>"}}'
            raise BadRequestError(msg) from None
        except RecursionError:
            raise BadRequestError("the JSON body is nested too deeply") from None
        if not isinstance(body, dict) or not isinstance(body.get("source"), str):
            raise BadRequestError('a JSON body must be {"source": "<policy YAML>"}')
        file = body.get("file")
        return body["source"], file if isinstance(file, str) and file else "<request>"
    return text, "<request>"


def _latest(state: State, agent: str) -> int:
    latest = policy_store.latest_version(state.engine, agent)
    if latest is None:
        raise NotFoundError(
            f"agent {agent} has no policy; apply one with `tether policy apply FILE`"
        )
    return latest


def _warnings(policy: Policy, source: str, file: str) -> list[str]:
    return [w.format(file) for w in lint(policy, source, file)]


@router.post(
    "/policies",
    status_code=201,
    response_model=Applied,
    summary="Apply a policy",
    description=_BODY_DOC + " Re-applying the current text changes nothing (HTTP 200).",
)
async def apply_policy(
    request: Request,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> Any:
    source, file = await _source(request)

    def work() -> dict[str, Any]:
        applied = policy_store.apply_policy(
            state.engine, source, principal.actor, datetime.now(UTC), file=file
        )
        policy = policy_store.require(state.engine, applied.agent, applied.version)
        return {
            "agent": applied.agent,
            "version": applied.version,
            "changed": applied.changed,
            "warnings": _warnings(policy, source, file),
        }

    out = await run_in_threadpool(work)
    return JSONResponse(out, status_code=201 if out["changed"] else 200)


@router.post(
    "/policies/check",
    response_model=Checked,
    summary="Validate a policy",
    description=_BODY_DOC + " Nothing is stored.",
)
async def check_policy(request: Request, _: Principal = Depends(require("read"))) -> Any:
    source, file = await _source(request)
    policy = Policy.parse(source, file)
    return {"ok": True, "agent": policy.agent, "warnings": _warnings(policy, source, file)}


@router.get("/policies", response_model=PolicyList, summary="Latest policy of every agent")
def list_policies(
    state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> dict[str, Any]:
    return {
        "items": [v.to_dict() for v in policy_store.list_latest(state.engine)],
        "next_cursor": None,
    }


@router.get("/policies/{agent}", response_model=PolicyDetail, summary="One agent's policy")
def get_policy(
    agent: str,
    version: int | None = Query(None, ge=1, le=MAX_VERSION, description="default: the latest"),
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
) -> dict[str, Any]:
    return policy_store.describe(state.engine, agent, version or _latest(state, agent))


@router.get("/policies/{agent}/suggest", summary="A proposed policy for the agent (not applied)")
def suggest_policy(
    agent: str, state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> dict[str, Any]:
    return policy_store.suggestion(state.engine, agent)


@router.get(
    "/policies/{agent}/history",
    response_model=PolicyList,
    summary="Every version of an agent's policy, newest first",
)
def policy_history(
    agent: str, state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> dict[str, Any]:
    _latest(state, agent)
    versions = policy_store.history(state.engine, agent)
    return {"items": [v.to_dict() for v in versions], "next_cursor": None}


@router.get(
    "/policies/{agent}/diff",
    response_model=PolicyDiff,
    summary="Unified diff between two versions (default: the latest and the one before)",
)
def policy_diff(
    agent: str,
    from_: int | None = Query(None, alias="from", ge=1, le=MAX_VERSION),
    to: int | None = Query(None, ge=1, le=MAX_VERSION),
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
) -> dict[str, Any]:
    to_v = to or _latest(state, agent)
    from_v = from_ or max(1, to_v - 1)
    text = policy_store.diff(state.engine, agent, from_v, to_v)
    return {"agent": agent, "from_version": from_v, "to_version": to_v, "diff": text}
