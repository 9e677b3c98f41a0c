"""Run: header, budget burn, trace tree with waterfall, span details (lazy), policy decisions
and approvals inline, checkpoints, human feedback and the kill button."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from tether.core.errors import BadRequestError, NotFoundError, TetherError
from tether.core.records import TERMINAL_STATUSES
from tether.server.console import sources
from tether.server.console.render import page
from tether.server.console.session import Viewer, admin_viewer, checked_viewer, viewer
from tether.server.deps import State, get_state
from tether.store import feedback as feedback_store
from tether.store import memory as memory_store
from tether.store import provenance as provenance_store
from tether.store import runs as run_store
from tether.store import tools as registry
from tether.store.engine import reading
from tether.store.tables import spans
from tether.store.timeline import timeline

router = APIRouter()
MAX_TREE_SPANS = 2000
# the timeline panel shows the newest checkpoints; the API and CLI list them all
MAX_CHECKPOINTS_SHOWN = 50


def flatten(tree: list[dict[str, Any]], depth: int = 0) -> list[dict[str, Any]]:
    """Depth-first rows of the trace tree, each with its `depth` and whether it has children."""
    rows: list[dict[str, Any]] = []
    for node in tree:
        rows.append({**node, "depth": depth, "has_children": bool(node["children"])})
        rows.extend(flatten(node["children"], depth + 1))
    return rows


def waterfall(rows: list[dict[str, Any]], now: datetime) -> tuple[float, list[dict[str, Any]]]:
    """Adds `offset_pct` and `width_pct` to each row, relative to the whole trace's time span."""
    if not rows:
        return 0.0, rows
    start = min(r["started_at"] for r in rows)
    end = max((r["ended_at"] or now) for r in rows)
    total_ms = max((end - start).total_seconds() * 1000.0, 0.001)
    for r in rows:
        off = (r["started_at"] - start).total_seconds() * 1000.0
        dur = ((r["ended_at"] or now) - r["started_at"]).total_seconds() * 1000.0
        r["offset_pct"] = round(100.0 * off / total_ms, 3)
        r["width_pct"] = round(max(100.0 * dur / total_ms, 0.25), 3)
        r["open"] = r["ended_at"] is None
    return total_ms, rows


def verdict_of(attributes: dict[str, Any] | None) -> dict[str, Any] | None:
    """A tool span's policy verdict: the MCP gateway nests it (`tether.decision: {decision,
    rule, reason}`), the SDK's guard flattens it (`tether.decision`, `tether.decision.rule`)."""
    attrs = attributes or {}
    found = attrs.get("tether.decision")
    if isinstance(found, dict) and found.get("decision"):
        return {k: found.get(k) for k in ("decision", "rule", "reason")}
    if isinstance(found, str) and found:
        return {"decision": found, "rule": attrs.get("tether.decision.rule"),
                "reason": attrs.get("tether.decision.reason")}  # fmt: skip
    return None


def span_decisions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The policy verdicts stamped on the run's tool spans, in trace order."""
    out = []
    for r in rows:
        verdict = r.get("verdict", verdict_of(r.get("attributes")))
        if verdict is not None:
            out.append({"span": r, **verdict})
    return out


def _run_checkpoints(state: State, run_id: str) -> list[dict[str, Any]]:
    """The newest checkpoints of the run's LangGraph threads, oldest first (the API's timeline)."""
    return timeline(state.engine, run_id)[-MAX_CHECKPOINTS_SHOWN:]


def _slim_spans(state: State, run_id: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The first MAX_TREE_SPANS spans in start order (as store.runs.run_spans) without their
    input and output, which load when a span is opened, and the count of spans per kind."""
    c = spans.c
    cols = [col for col in spans.columns if col.name not in ("input", "output")]
    q = (
        select(*cols)
        .where(c.run_id == run_id)
        .order_by(c.started_at, c.trace_id, c.span_id)
        .limit(MAX_TREE_SPANS)
    )
    kinds_q = select(c.kind, func.count()).where(c.run_id == run_id).group_by(c.kind)
    with reading(state.engine) as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
        kinds = {str(k): int(n) for k, n in conn.execute(kinds_q)}
    return rows, kinds


def _run_context(state: State, run_id: str, now: datetime) -> dict[str, Any]:
    run = run_store.get_run(state.engine, run_id)
    slim, kinds = _slim_spans(state, run_id)
    span_total = sum(kinds.values())
    total_ms, rows = waterfall(flatten(run_store.nest(slim)), now)
    for r in rows:
        r["verdict"] = verdict_of(r.get("attributes"))
    return {
        "run": run,
        "rows": rows,
        "total_ms": total_ms,
        "kinds": kinds,
        "truncated": span_total > len(slim),
        "span_total": span_total,
        "burn": sources.run_burn(state, run, now),
        "decisions": sources.run_decisions(state, run_id),
        "verdicts": span_decisions(rows),
        "approvals": sources.run_approvals(state, run_id),
        "checkpoints": _run_checkpoints(state, run_id),
        "memory": memory_store.run_activity(state.engine, run_id),
        "taint": sorted(registry.run_tags(state.engine, run_id)),
        "provenance": provenance_store.list_values(state.engine, run_id, limit=50),
        "feedback": feedback_store.list_feedback(state.engine, run_id),
        "can_kill": run["status"] not in TERMINAL_STATUSES,
    }


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(
    run_id: str, request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    try:
        ctx = await run_in_threadpool(_run_context, state, run_id, datetime.now(UTC))
    except NotFoundError as exc:
        return page(request, "error.html", status_code=404, title="Run not found",
                    message=exc.message)  # fmt: skip
    return page(request, "run.html", title=f"Run {run_id}", **ctx)


@router.get("/runs/{run_id}/live", response_class=HTMLResponse)
async def run_live(
    run_id: str, request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    """The run's summary or its trace (`part`), polled while the run is not finished."""
    part = request.query_params.get("part", "summary")
    template = {"summary": "fragments/run_summary.html", "trace": "fragments/run_trace.html"}
    if part not in template:
        return page(request, "fragments/flash.html", status_code=400, kind="error",
                    message="part: summary or trace")  # fmt: skip
    try:
        ctx = await run_in_threadpool(_run_context, state, run_id, datetime.now(UTC))
    except NotFoundError as exc:
        return page(request, "fragments/flash.html", status_code=404, kind="error",
                    message=exc.message)  # fmt: skip
    resp = page(request, template[part], **ctx)
    if part == "summary" and ctx["run"]["status"] in TERMINAL_STATUSES:
        # the run just ended while someone watched: reload once for the final trace and actions
        resp.headers["HX-Refresh"] = "true"
    return resp


def _span(state: State, run_id: str, trace_id: str, span_id: str) -> dict[str, Any]:
    q = select(spans).where(
        spans.c.trace_id == trace_id, spans.c.span_id == span_id, spans.c.run_id == run_id
    )
    with reading(state.engine) as conn:
        row = conn.execute(q).first()
    if row is None:
        raise NotFoundError(f"no span {trace_id}/{span_id} in run {run_id}")
    span = dict(row._mapping)
    span["attributes"] = sources.redacted(state, span.get("attributes"))
    return span


@router.get("/runs/{run_id}/spans/{trace_id}/{span_id}", response_class=HTMLResponse)
async def span_detail(
    run_id: str,
    trace_id: str,
    span_id: str,
    request: Request,
    who: Viewer = Depends(viewer),
    state: State = Depends(get_state),
) -> HTMLResponse:
    try:
        span = await run_in_threadpool(_span, state, run_id, trace_id, span_id)
    except NotFoundError as exc:
        return page(request, "fragments/flash.html", status_code=404, kind="error",
                    message=exc.message)  # fmt: skip
    return page(request, "fragments/span_detail.html", span=span)


def _back(request: Request, run_id: str, fragment: str, **ctx: Any) -> Response:
    if request.headers.get("hx-request"):
        return page(request, fragment, **ctx)
    return RedirectResponse(f"/runs/{run_id}", status_code=303)


@router.post("/runs/{run_id}/feedback")
async def give_feedback(
    run_id: str,
    request: Request,
    choice: str = Form(""),
    score: str = Form(""),
    comment: str = Form(""),
    who: Viewer = Depends(checked_viewer),
    state: State = Depends(get_state),
) -> Response:
    """thumbs up/down (with an optional comment), a 0..1 score, or a comment alone."""
    text = comment.strip() or None
    kind, value = {"up": ("thumbs", 1.0), "down": ("thumbs", -1.0)}.get(choice, (choice, None))
    message, ok = "", True
    try:
        if kind == "score":
            try:
                value = float(score)
            except ValueError:
                raise BadRequestError("choose a score from 0 to 1") from None
        await run_in_threadpool(
            lambda: feedback_store.add_feedback(state.engine, run_id, kind=kind, value=value,
                                                comment=text, user=who.actor,
                                                now=datetime.now(UTC))
        )  # fmt: skip
        message = "Thanks: feedback stored."
    except TetherError as exc:
        message, ok = exc.message, False
    items = await run_in_threadpool(feedback_store.list_feedback, state.engine, run_id)
    return _back(request, run_id, "fragments/feedback.html", run={"id": run_id},
                 feedback=items, message=message, ok=ok)  # fmt: skip


@router.post("/runs/{run_id}/kill")
async def kill_run(
    run_id: str,
    request: Request,
    reason: str = Form(""),
    who: Viewer = Depends(admin_viewer),
    state: State = Depends(get_state),
) -> Response:
    """Calls the LLM gateway's kill switch: in-flight streams cut, later calls refused."""
    why = reason.strip() or f"killed from the console by {who.actor}"
    try:
        await sources.kill(state, run_id, actor=who.actor, reason=why)
        message, ok = "Run killed.", True
    except TetherError as exc:
        message, ok = exc.message, False
    if request.headers.get("hx-request"):
        resp = page(request, "fragments/flash.html", kind="ok" if ok else "error",
                    message=message)  # fmt: skip
        if ok:
            resp.headers["HX-Refresh"] = "true"
        return resp
    return RedirectResponse(f"/runs/{run_id}", status_code=303)
