"""`/api/v1/memory/...`: write, search, read, list and forget agent memories; namespaces and who
read what. An agent key works in its own namespace and what its policy grants; an admin key
without an agent is an operator (names namespaces explicitly, may forget by user)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field

from tether.core.errors import BadRequestError, NotFoundError, PermissionDeniedError
from tether.core.records import valid_run_id
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.server.memory import Caller, MemoryService
from tether.store import episodes
from tether.store import memory as store
from tether.store import runs as run_store

router = APIRouter(prefix="/memory", tags=["memory"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid request (bad namespace, vector, filter)"},
    401: {"description": "missing or invalid API key"},
    402: {"description": "the embedding call did not fit the run's budget"},
    403: {"description": "the namespace is not granted to this agent (memory_not_granted)"},
}


class MemoryOut(BaseModel):
    id: str
    namespace: str
    key: str | None
    text: str
    metadata: dict[str, Any] | None
    tags: list[str]
    user: str | None
    source_run_id: str | None
    source_span_id: str | None
    content_hash: str
    written_by: str | None
    created_at: str
    superseded_at: str | None
    superseded_by: str | None


class WriteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=64 * 1024, examples=["Customer 42 prefers email"])
    namespace: str | None = Field(None, description="defaults to the agent's own namespace")
    key: str | None = Field(None, max_length=300, description="a new text under a key supersedes")
    metadata: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list, max_length=32)
    embedding: list[float] | None = Field(None, description="only for `client` namespaces")
    embed: bool = Field(True, description="false: store without a vector (listed, not searched)")
    span_id: str | None = Field(None, max_length=16)


class WriteOut(BaseModel):
    status: str = Field(examples=["created"], description="created | superseded | unchanged")
    superseded: str | None
    memory: MemoryOut


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str | None = Field(None, max_length=64 * 1024)
    embedding: list[float] | None = None
    namespaces: list[str] | None = Field(None, max_length=50)
    k: int = Field(10, ge=1, le=store.MAX_K)
    tags: list[str] = Field(default_factory=list, max_length=32)
    key_prefix: str | None = Field(None, max_length=300)
    as_of: datetime | None = None


class HitOut(BaseModel):
    score: float
    memory: MemoryOut


class SearchOut(BaseModel):
    items: list[HitOut]


class ForgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    run_id: str | None = None
    user: str | None = Field(None, max_length=200)
    namespace: str | None = None


class ForgetOut(BaseModel):
    forgotten: list[str]


class NamespaceOut(BaseModel):
    name: str
    owner_agent: str | None
    embedder: str | None
    dim: int | None
    memories: int
    superseded: int
    bytes: int
    last_write_at: str | None


class NamespacesOut(BaseModel):
    items: list[NamespaceOut]
    index: str = Field(description="the vector index in use: pgvector | sqlite-vec | exact")
    own: str | None = Field(description="the calling agent's own namespace (none for operators)")


class ListOut(BaseModel):
    items: list[MemoryOut]


class ReadOut(BaseModel):
    at: str
    actor: str
    run_id: str | None
    ids: list[str]


class ReadsOut(BaseModel):
    items: list[ReadOut]


def service(state: State = Depends(get_state)) -> MemoryService:
    if state.memory is None:  # pragma: no cover - install() always sets it
        raise NotFoundError("memory is not enabled on this server")
    return state.memory


def _caller(request: Request, state: State, principal: Principal) -> Caller:
    run_id = request.headers.get("x-tether-run-id")
    if run_id is not None and not valid_run_id(run_id):
        raise BadRequestError("X-Tether-Run-Id: not a valid run id")
    user = request.headers.get("x-tether-user")
    if run_id:
        try:
            run = run_store.get_run(state.engine, run_id)
        except NotFoundError:
            run = None
        if run is not None and run.get("user"):
            user = run["user"]  # the run's user is the partition, not what a header claims
    return Caller(
        agent=principal.agent, actor=principal.actor,
        operator=principal.has("admin") and principal.agent is None,
        authorization=request.headers.get("authorization"), run_id=run_id, user=user,
    )  # fmt: skip


def writer(
    request: Request, state: State = Depends(get_state),
    principal: Principal = Depends(require("agent")),
) -> Caller:  # fmt: skip
    """The caller of a write-side route (an agent's key, or admin); FastAPI runs it in a thread."""
    return _caller(request, state, principal)


def reader(
    request: Request, state: State = Depends(get_state),
    principal: Principal = Depends(require("agent", "read")),
) -> Caller:  # fmt: skip
    """The caller of a read route: read and admin keys without an agent look as operators."""
    caller = _caller(request, state, principal)
    if principal.agent is None:
        return Caller(None, caller.actor, True, None, caller.run_id, caller.user)
    return caller


def _out(m: store.Memory) -> MemoryOut:
    return MemoryOut(**m.to_dict())


@router.post(
    "/memories",
    status_code=201,
    response_model=WriteOut,
    responses=_ERRORS,
    operation_id="memory_write",
    summary="Write a memory (embedded by the namespace's model)",
)
async def write_memory(
    body: WriteIn, caller: Caller = Depends(writer), svc: MemoryService = Depends(service)
) -> WriteOut:
    w = await svc.write(
        caller, text=body.text, namespace=body.namespace, key=body.key, metadata=body.metadata,
        tags=body.tags, embedding=body.embedding, span_id=body.span_id, embed=body.embed,
    )  # fmt: skip
    return WriteOut(status=w.status, superseded=w.superseded, memory=_out(w.memory))


@router.post(
    "/search",
    response_model=SearchOut,
    responses=_ERRORS,
    operation_id="memory_search",
    summary="The memories most similar to a query, from namespaces this key may read",
)
async def search_memory(
    body: SearchIn, caller: Caller = Depends(writer), svc: MemoryService = Depends(service)
) -> SearchOut:
    hits = await svc.search(
        caller, query=body.query, embedding=body.embedding, namespaces=body.namespaces, k=body.k,
        tags=body.tags, key_prefix=body.key_prefix, as_of=body.as_of,
    )  # fmt: skip
    return SearchOut(items=[HitOut(score=h.score, memory=_out(h.memory)) for h in hits])


@router.post(
    "/forget",
    response_model=ForgetOut,
    responses={**_ERRORS, 404: {"description": "nothing to forget: no memory matched"}},
    operation_id="memory_forget",
    summary="Erase memories by id, source run or user (right to erasure)",
)
async def forget_memory(
    body: ForgetIn, caller: Caller = Depends(writer), svc: MemoryService = Depends(service)
) -> ForgetOut:
    gone = await svc.forget(caller, memory_id=body.id, run_id=body.run_id, user=body.user,
                            namespace=body.namespace)  # fmt: skip
    return ForgetOut(forgotten=gone)


@router.get(
    "/memories/{memory_id}",
    response_model=MemoryOut,
    responses=_ERRORS,
    operation_id="memory_get",
    summary="One memory",
)
def get_memory(
    memory_id: str, state: State = Depends(get_state), caller: Caller = Depends(reader),
    svc: MemoryService = Depends(service),
) -> MemoryOut:  # fmt: skip
    access = svc.access(caller)
    return _out(store.get(state.engine, access, memory_id, now=datetime.now(UTC)))


@router.get(
    "/namespaces",
    response_model=NamespacesOut,
    responses=_ERRORS,
    operation_id="memory_namespaces",
    summary="Memory namespaces with their size",
)
def list_namespaces(
    state: State = Depends(get_state), caller: Caller = Depends(reader),
    svc: MemoryService = Depends(service),
) -> NamespacesOut:  # fmt: skip
    access = svc.access(caller)
    names = None if access.operator else list(access.read_scope(datetime.now(UTC)).namespaces)
    stats = store.namespace_stats(state.engine, names)
    index = svc.index.name if svc.index is not None else "exact"
    items = [NamespaceOut(**s.to_dict()) for s in stats]
    return NamespacesOut(items=items, index=index, own=access.own)


@router.get(
    "/namespaces/{namespace}/memories",
    response_model=ListOut,
    responses=_ERRORS,
    operation_id="memory_list",
    summary="The newest memories of a namespace",
)
def list_namespace(
    namespace: str, as_of: datetime | None = None,
    key_prefix: str | None = Query(None, max_length=300), limit: int = Query(50, ge=1, le=500),
    state: State = Depends(get_state), caller: Caller = Depends(reader),
    svc: MemoryService = Depends(service),
) -> ListOut:  # fmt: skip
    access = svc.access(caller)
    items = store.list_memories(
        state.engine, access, namespace=namespace, now=datetime.now(UTC), user=caller.user,
        key_prefix=key_prefix, as_of=as_of, limit=limit,
    )  # fmt: skip
    return ListOut(items=[_out(m) for m in items])


@router.get(
    "/namespaces/{namespace}/reads",
    response_model=ReadsOut,
    responses=_ERRORS,
    operation_id="memory_reads",
    summary="Who read this namespace, and which memories",
)
def namespace_reads(
    namespace: str, limit: int = Query(50, ge=1, le=500), state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
) -> ReadsOut:  # fmt: skip
    out: list[ReadOut] = []
    for r in store.reads_of(state.engine, namespace, limit=limit):
        out.append(ReadOut(at=r.at.isoformat(), actor=r.actor, run_id=r.run_id, ids=list(r.ids)))
    return ReadsOut(items=out)


@router.post(
    "/reindex",
    responses=_ERRORS,
    operation_id="memory_reindex",
    summary="Rebuild the vector index from the stored memories",
)
async def reindex(
    _: Principal = Depends(require("admin")), svc: MemoryService = Depends(service)
) -> dict[str, int]:
    return {"indexed": await run_in_threadpool(svc.reindex)}


class EpisodeOut(BaseModel):
    run_id: str
    agent: str | None
    version: str | None
    task_id: str | None
    status: str
    input: str | None
    output: str | None
    cost_usd: str
    llm_calls: int
    tools: list[str]
    feedback: dict[str, Any]
    score: float | None
    started_at: str


class SimilarOut(BaseModel):
    score: float
    episode: EpisodeOut


class EpisodesOut(BaseModel):
    items: list[SimilarOut]


class StepOut(BaseModel):
    n: int
    kind: str
    name: str
    input: str | None
    output: str | None
    model: str | None
    error: str | None
    latency_ms: float | None
    started_at: str


class StepsOut(BaseModel):
    run_id: str
    items: list[StepOut]


def _own_agent(principal: Principal, agent: str) -> None:
    if principal.agent is not None and principal.agent != agent and not principal.has("admin"):
        raise PermissionDeniedError(
            f"this key speaks for agent {principal.agent}: it may recall only its own episodes",
            code="wrong_agent",
        )


@router.get(
    "/episodes", response_model=EpisodesOut, responses=_ERRORS, operation_id="memory_episodes",
    summary="The agent's past runs most like a new task (task input, tools, outcome, feedback)",
)  # fmt: skip
def similar_episodes(
    agent: str = Query(min_length=1, max_length=200),
    task: str = Query(min_length=1, max_length=10_000),
    k: int = Query(5, ge=1, le=50),
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent", "read")),
) -> EpisodesOut:
    _own_agent(principal, agent)
    found = episodes.similar(state.engine, agent, task, k=k)
    items = [SimilarOut(score=s, episode=_episode(e)) for e, s in found]
    return EpisodesOut(items=items)


def _episode(e: episodes.Episode) -> EpisodeOut:
    data = e.to_dict()
    data["feedback"] = jsonable_encoder(e.feedback)
    return EpisodeOut(**data)


@router.get(
    "/episodes/{run_id}", response_model=StepsOut, responses=_ERRORS,
    operation_id="memory_episode_steps",
    summary="A run's recorded steps in order (LLM calls, tool calls, approvals), for replay",
)  # fmt: skip
def episode_steps(
    run_id: str, state: State = Depends(get_state),
    principal: Principal = Depends(require("agent", "read")),
) -> StepsOut:  # fmt: skip
    run = run_store.get_run(state.engine, run_id)
    _own_agent(principal, run.get("agent") or "")
    items = [StepOut(**s.to_dict()) for s in episodes.steps(state.engine, run_id)]
    return StepsOut(run_id=run_id, items=items)
