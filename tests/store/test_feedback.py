from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from tests.store.test_runs import T0, make_run
from tether.core.errors import BadRequestError, NotFoundError
from tether.store.feedback import add_feedback, add_score, list_feedback, list_scores
from tether.store.runs import get_run, list_runs


def test_latest_score_becomes_the_runs_score(db: Engine) -> None:
    rid = make_run(db, 1)
    assert get_run(db, rid)["score"] is None
    add_score(db, rid, name="accuracy", value=0.5, source="eval", now=T0)
    add_score(db, rid, name="accuracy", value=0.9, source="sdk", comment="better", now=T0
              + timedelta(seconds=1))  # fmt: skip
    assert get_run(db, rid)["score"] == 0.9
    assert [(s["value"], s["source"]) for s in list_scores(db, rid)] == [
        (0.5, "eval"),
        (0.9, "sdk"),
    ]


def test_score_validation(db: Engine) -> None:
    rid = make_run(db, 1)
    with pytest.raises(BadRequestError, match=r"^value"):
        add_score(db, rid, name="x", value=float("nan"), source="eval", now=T0)
    with pytest.raises(BadRequestError, match=r"^source"):
        add_score(db, rid, name="x", value=1, source="robot", now=T0)
    with pytest.raises(BadRequestError, match=r"^name"):
        add_score(db, rid, name="", value=1, source="api", now=T0)
    with pytest.raises(NotFoundError):
        add_score(db, "run_missing", name="x", value=1, source="api", now=T0)
    assert list_scores(db, rid) == []


def test_feedback_summary_on_run_and_list(db: Engine) -> None:
    rid = make_run(db, 1)
    other = make_run(db, 2)
    sec = timedelta(seconds=1)
    add_feedback(db, rid, kind="thumbs", value=1, user="alice", now=T0)
    add_feedback(db, rid, kind="thumbs", value=-1, comment="wrong vendor", user="bob",
                 now=T0 + sec)  # fmt: skip
    add_feedback(db, rid, kind="comment", comment="needs a retry", user="carol", now=T0 + 2 * sec)
    add_feedback(db, rid, kind="score", value=0.25, now=T0 + 3 * sec)
    summary = get_run(db, rid)["feedback"]
    assert (summary["thumbs_up"], summary["thumbs_down"]) == (1, 1)
    assert [c["comment"] for c in summary["comments"]] == ["wrong vendor", "needs a retry"]
    assert summary["comments"][0]["user"] == "bob"
    by_id = {r["id"]: r["feedback"] for r in list_runs(db)[0]}
    assert by_id[rid] == summary and by_id[other]["thumbs_up"] == 0
    assert [f["kind"] for f in list_feedback(db, rid)] == ["thumbs", "thumbs", "comment", "score"]


@pytest.mark.parametrize(
    ("kind", "value", "comment", "field"),
    [
        ("thumbs", 2, None, "value"),
        ("thumbs", None, None, "value"),
        ("score", 1.5, None, "value"),
        ("score", -0.1, None, "value"),
        ("comment", 1, "x", "value"),
        ("comment", None, "  ", "comment"),
        ("stars", 1, None, "kind"),
    ],
)
def test_feedback_validation(
    db: Engine, kind: str, value: float | None, comment: str | None, field: str
) -> None:
    rid = make_run(db, 1)
    with pytest.raises(BadRequestError, match=rf"^{field}"):
        add_feedback(db, rid, kind=kind, value=value, comment=comment, now=T0)
    assert list_feedback(db, rid) == []


def test_feedback_on_unknown_run(db: Engine) -> None:
    with pytest.raises(NotFoundError):
        add_feedback(db, "run_missing", kind="thumbs", value=1, now=T0)
