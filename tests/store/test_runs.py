from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from tether.core.errors import BadRequestError, ConflictError, NotFoundError
from tether.core.records import RunAttribution, SpanRecord
from tether.store.ingest import write_spans
from tether.store.runs import (
    RunFilters,
    create_run,
    get_run,
    list_runs,
    list_spans,
    span_tree,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _trace(i: int) -> str:
    return f"{i:032x}"


def make_run(
    db: Engine, i: int, *, agent: str = "triage", version: str = "v1", user: str = "alice",
    status: str = "ok", cost: int = 1000, start: datetime | None = None,
    seconds: float | None = 5, task: str | None = None,
) -> str:  # fmt: skip
    """A run with a root agent span and one LLM child; `seconds=None` leaves it running."""
    trace = _trace(i)
    started = start or T0 + timedelta(minutes=i)
    ended = None if seconds is None else started + timedelta(seconds=seconds)
    attribution = RunAttribution(agent=agent, version=version, task_id=task or f"T-{i}", user=user)
    root = SpanRecord(
        trace_id=trace, span_id=f"{i:016x}", run_id=f"run_{trace}", kind="agent", name=agent,
        started_at=started, ended_at=ended, is_root=True, input=f"in {i}", output="out",
        status="error" if status == "error" else "ok", attribution=attribution,
        error="boom" if status == "error" else None,
    )  # fmt: skip
    llm = SpanRecord(
        trace_id=trace, span_id=f"{i + 1:016x}"[::-1], parent_id=root.span_id,
        run_id=root.run_id, kind="llm", name="chat", started_at=started + timedelta(seconds=1),
        ended_at=started + timedelta(seconds=2), model="gpt-4o-mini", input_tokens=100,
        output_tokens=20, cost_nusd=cost, status="ok", attribution=attribution,
    )  # fmt: skip
    write_spans(db, [root, llm] if seconds is not None else [llm], now=T0, source="otlp")
    return root.run_id


def _all_pages(db: Engine, **kw: object) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        rows, cursor = list_runs(db, cursor=cursor, **kw)  # type: ignore[arg-type]
        ids += [r["id"] for r in rows]
        if cursor is None:
            return ids


def test_list_is_newest_first_and_pages_are_complete(db: Engine) -> None:
    ids = [make_run(db, i) for i in range(7)]
    page, cursor = list_runs(db, limit=3)
    assert [r["id"] for r in page] == ids[::-1][:3]
    assert cursor is not None
    assert page[0]["cost_nusd"] == 1000 and page[0]["llm_calls"] == 1
    assert page[0]["feedback"] == {"thumbs_up": 0, "thumbs_down": 0, "comments": []}
    assert _all_pages(db, limit=3) == ids[::-1]


def test_pagination_is_stable_when_runs_arrive_and_ties_share_a_start(db: Engine) -> None:
    same = T0 + timedelta(hours=1)
    ids = [make_run(db, i, start=same) for i in range(5)] + [make_run(db, 10 + i) for i in range(3)]
    first, cursor = list_runs(db, limit=4)
    # a newer run arrives between two page fetches: it must not shift what comes next
    make_run(db, 99, start=T0 + timedelta(days=1))
    rest = []
    while cursor:
        rows, cursor = list_runs(db, limit=4, cursor=cursor)
        rest += [r["id"] for r in rows]
    seen = [r["id"] for r in first] + rest
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))


@pytest.mark.parametrize("sort", ["cost", "-cost", "duration", "-duration", "started_at"])
def test_every_sort_pages_through_all_runs_in_order(db: Engine, sort: str) -> None:
    for i in range(6):
        make_run(db, i, cost=(i % 3) * 100, seconds=None if i == 4 else 1 + i % 2)
    rows, _ = list_runs(db, sort=sort, limit=500)
    ids = _all_pages(db, sort=sort, limit=2)
    assert ids == [r["id"] for r in rows] and len(set(ids)) == 6
    if sort.endswith("cost"):
        costs = [r["cost_nusd"] for r in rows]
        assert costs == sorted(costs, reverse=sort.startswith("-"))
    if sort == "-duration":
        assert rows[-1]["ended_at"] is None  # a running run has no duration and sorts last


def test_filters(db: Engine) -> None:
    a = make_run(db, 1, agent="triage", user="alice", cost=500, task="INV-7")
    b = make_run(db, 2, agent="triage", version="v2", user="bob", status="error", cost=5_000)
    c = make_run(db, 3, agent="writer", user="alice", cost=2_000_000_000)

    def ids(**kw: object) -> set[str]:
        return {r["id"] for r in list_runs(db, RunFilters(**kw))[0]}  # type: ignore[arg-type]

    assert ids(agent="triage") == {a, b}
    assert ids(agent="triage", version="v2") == {b}
    assert ids(status="failed") == {b}
    assert ids(status="succeeded", user="alice") == {a, c}
    assert ids(task_id="INV-7") == {a}
    assert ids(min_cost_usd=Decimal("0.000001")) == {b, c}
    assert ids(max_cost_usd=Decimal("0.000001")) == {a}
    assert ids(min_cost_usd=Decimal(1), max_cost_usd=Decimal(3)) == {c}
    assert ids(started_after=T0 + timedelta(minutes=2)) == {b, c}
    assert ids(started_before=T0 + timedelta(minutes=2)) == {a}
    assert ids(q="inv-") == {a}
    assert ids(q="WRIT") == {c}
    assert ids(q="100%") == set()  # LIKE wildcards are matched literally
    assert ids(q=a[-6:]) == {a}


def test_bad_arguments_name_the_field(db: Engine) -> None:
    make_run(db, 1)
    make_run(db, 2)
    _, cursor = list_runs(db, limit=1)
    assert cursor is not None
    with pytest.raises(BadRequestError, match=r"^cursor"):
        list_runs(db, sort="cost", cursor=cursor)
    with pytest.raises(BadRequestError, match=r"^cursor"):
        list_runs(db, cursor="not-a-cursor!")
    with pytest.raises(BadRequestError, match=r"^sort"):
        list_runs(db, sort="name")
    with pytest.raises(BadRequestError, match=r"^limit"):
        list_runs(db, limit=501)
    with pytest.raises(BadRequestError, match=r"^status"):
        list_runs(db, RunFilters(status="done"))


def test_get_run_and_span_tree(db: Engine) -> None:
    rid = make_run(db, 1)
    run = get_run(db, rid)
    assert (run["agent"], run["status"], run["input"]) == ("triage", "succeeded", "in 1")
    tree = span_tree(db, rid)
    assert [s["kind"] for s in tree] == ["agent"]
    assert [s["kind"] for s in tree[0]["children"]] == ["llm"]
    assert tree[0]["children"][0]["children"] == []
    with pytest.raises(NotFoundError):
        get_run(db, "run_nope")


def test_orphan_span_becomes_a_root(db: Engine) -> None:
    rid = make_run(db, 1, seconds=None)  # only the LLM child arrived; its parent is missing
    tree = span_tree(db, rid)
    assert [s["kind"] for s in tree] == ["llm"]


def test_list_spans_filters_and_pages(db: Engine) -> None:
    r1 = make_run(db, 1)
    make_run(db, 2)
    rows, cursor = list_spans(db, run_id=r1, limit=1)
    assert [s["kind"] for s in rows] == ["agent"] and cursor
    rows2, cursor2 = list_spans(db, run_id=r1, limit=1, cursor=cursor)
    assert [s["kind"] for s in rows2] == ["llm"] and cursor2 is None
    llm, _ = list_spans(db, kind="llm")
    assert len(llm) == 2 and llm[0]["started_at"] > llm[1]["started_at"]
    everything, seen, cursor = [], 0, None
    while True:
        page, cursor = list_spans(db, limit=3, cursor=cursor)
        everything += page
        seen += 1
        if cursor is None:
            break
    assert len(everything) == 4 and seen == 2
    with pytest.raises(BadRequestError, match=r"^cursor"):
        list_spans(db, cursor=cursor2 or "x")


def test_create_run(db: Engine) -> None:
    attribution = RunAttribution(agent="triage", version="v1", task_id="T-9", user="carol")
    run = create_run(db, run_id="run_abc", attribution=attribution, input="hello", now=T0)
    assert (run["id"], run["status"], run["input"], run["user"]) == (
        "run_abc",
        "running",
        "hello",
        "carol",
    )
    with pytest.raises(ConflictError):
        create_run(db, run_id="run_abc", attribution=attribution, input=None, now=T0)
    with pytest.raises(BadRequestError, match=r"^id"):
        create_run(db, run_id="bad id!", attribution=attribution, input=None, now=T0)
