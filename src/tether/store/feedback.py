"""Scores (from evals, the SDK, the API) and human feedback (thumbs, 0..1 scores, comments)
on runs. A run's `score` column holds its latest score; feedback is summarised per run."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import Connection, Engine, insert, select, update

from tether.core.errors import BadRequestError, NotFoundError
from tether.core.ids import make_id
from tether.store.engine import reading
from tether.store.tables import feedback, runs, scores

ScoreSource = Literal["sdk", "eval", "api", "human"]
FeedbackKind = Literal["thumbs", "score", "comment"]
SCORE_SOURCES: tuple[str, ...] = get_args(ScoreSource)
FEEDBACK_KINDS: tuple[str, ...] = get_args(FeedbackKind)
MAX_COMMENT = 10_000


def _require_run(conn: Connection, run_id: str) -> None:
    if conn.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is None:
        raise NotFoundError(f"no run {run_id}; `tether runs list` shows the ids")


def _check_comment(comment: str | None) -> None:
    if comment is not None and len(comment) > MAX_COMMENT:
        raise BadRequestError(f"comment: longer than {MAX_COMMENT} characters")


def add_score(
    engine: Engine,
    run_id: str,
    *,
    name: str,
    value: float,
    source: str,
    now: datetime,
    comment: str | None = None,
    span_id: str | None = None,
) -> dict[str, Any]:
    """Stores a named score and makes it the run's `score`. Any finite number is accepted
    (an eval decides its own scale); tether's own evals use 0..1."""
    if not name or len(name) > 200:
        raise BadRequestError("name: 1-200 characters")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequestError("value: must be a finite number")
    if source not in SCORE_SOURCES:
        raise BadRequestError(f"source: must be one of {', '.join(SCORE_SOURCES)}")
    _check_comment(comment)
    row = {
        "id": make_id("scr", os.urandom(12)),
        "run_id": run_id,
        "span_id": span_id,
        "name": name,
        "value": float(value),
        "source": source,
        "comment": comment,
        "created_at": now,
    }
    with engine.begin() as conn:
        _require_run(conn, run_id)
        conn.execute(insert(scores).values(**row))
        conn.execute(update(runs).where(runs.c.id == run_id).values(score=float(value)))
    return row


def validate_feedback(kind: str, value: float | None, comment: str | None) -> float | None:
    """thumbs: value +1 or -1; score: value in 0..1; comment: no value, a non-empty comment."""
    if kind not in FEEDBACK_KINDS:
        raise BadRequestError(f"kind: must be one of {', '.join(FEEDBACK_KINDS)}")
    _check_comment(comment)
    if value is not None and (isinstance(value, bool) or not math.isfinite(float(value))):
        raise BadRequestError("value: must be a finite number")
    if kind == "thumbs":
        if value not in (1, -1):
            raise BadRequestError("value: thumbs feedback takes 1 (up) or -1 (down)")
        return float(value)
    if kind == "score":
        if value is None or not 0 <= value <= 1:
            raise BadRequestError("value: score feedback takes a number from 0 to 1")
        return float(value)
    if value is not None:
        raise BadRequestError("value: comment feedback takes no value")
    if not comment or not comment.strip():
        raise BadRequestError("comment: comment feedback needs a non-empty comment")
    return None


def add_feedback(
    engine: Engine,
    run_id: str,
    *,
    kind: str,
    value: float | None = None,
    comment: str | None = None,
    user: str | None = None,
    now: datetime,
) -> dict[str, Any]:
    """Stores one piece of human feedback on a run (see `validate_feedback` for the rules)."""
    checked = validate_feedback(kind, value, comment)
    row = {
        "id": make_id("fb", os.urandom(12)),
        "run_id": run_id,
        "kind": kind,
        "value": checked,
        "comment": comment,
        "user": user,
        "created_at": now,
    }
    with engine.begin() as conn:
        _require_run(conn, run_id)
        conn.execute(insert(feedback).values(**row))
    return row


def list_feedback(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    q = (
        select(feedback)
        .where(feedback.c.run_id == run_id)
        .order_by(feedback.c.created_at, feedback.c.id)
    )
    with reading(engine) as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def list_scores(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    q = select(scores).where(scores.c.run_id == run_id).order_by(scores.c.created_at, scores.c.id)
    with reading(engine) as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def empty_summary() -> dict[str, Any]:
    return {"thumbs_up": 0, "thumbs_down": 0, "comments": []}


def feedback_summaries(conn: Connection, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`{run_id: {thumbs_up, thumbs_down, comments: [{user, comment, created_at}]}}`, one query."""
    out = {rid: empty_summary() for rid in run_ids}
    if not run_ids:
        return out
    q = (
        select(feedback.c.run_id, feedback.c.kind, feedback.c.value, feedback.c.comment,
               feedback.c.user, feedback.c.created_at)
        .where(feedback.c.run_id.in_(list(run_ids)))
        .order_by(feedback.c.created_at, feedback.c.id)
    )  # fmt: skip
    for r in conn.execute(q):
        summary = out[r.run_id]
        if r.kind == "thumbs":
            summary["thumbs_up" if (r.value or 0) > 0 else "thumbs_down"] += 1
        if r.comment:
            summary["comments"].append(
                {"user": r.user, "comment": r.comment, "created_at": r.created_at}
            )
    return out
