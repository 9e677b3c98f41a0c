"""The console's pure helpers: money and duration display, chat detection, sparklines,
percentile, trace layout, and the signed session cookie."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tether.config import load_settings
from tether.server.console import render
from tether.server.console.run_detail import flatten, span_decisions, waterfall
from tether.server.console.session import (
    decode_session,
    encode_session,
    new_viewer,
    role_for_scopes,
    secret_key,
)
from tether.server.deps import State
from tether.store import aggregates
from tether.store.engine import make_engine


def test_money_and_durations_read_like_a_dashboard():
    assert render.usd(None) == "—"
    assert render.usd(0) == "$0"
    assert render.usd(1_234_560_000_000) == "$1,235"
    assert render.usd(2_500_000_000) == "$2.50"
    assert render.usd(12_340_000) == "$0.0123"
    assert render.usd(42_000) == "$0.000042"
    assert render.usd(42_000, unknown=True) == "≥$0.000042"
    assert render.duration(0.5) == "0.50 ms"
    assert render.duration(340) == "340 ms"
    assert render.duration(1500) == "1.5 s"
    assert render.duration(125_000) == "2m 05s"
    assert render.duration(3_725_000) == "1h 02m"
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    assert render.ago(now - timedelta(seconds=3), now) == "just now"
    assert render.ago(now - timedelta(minutes=5), now) == "5m ago"
    assert render.ago(now - timedelta(days=2), now) == "2d ago"


def test_chat_messages_are_recognised_and_other_json_is_not():
    msgs = render.chat_messages('[{"role": "user", "content": "hi"}]')
    assert msgs == [{"role": "user", "content": "hi"}]
    parts = render.chat_messages(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}
    )
    assert parts == [{"role": "user", "content": "a"}]
    assert render.chat_messages('{"ok": true}') is None
    assert render.chat_messages("plain text") is None
    assert render.chat_messages("[1, 2]") is None
    assert render.pretty('{"a":1}') == '{\n  "a": 1\n}'
    assert render.pretty("not json {") == "not json {"


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=30))
def test_sparkline_points_stay_inside_the_box(values: list[int]):
    line = render.spark(values, 120, 28)["line"]
    points = [tuple(map(float, p.split(","))) for p in line.split()]
    assert len(points) == len(values)
    assert all(0 <= x <= 120 and 0 <= y <= 28 for x, y in points)


def test_percentile_matches_postgresql_percentile_cont():
    assert aggregates.percentile([5.0], 0.95) == 5.0
    assert aggregates.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert aggregates.percentile(list(map(float, range(1, 101))), 0.95) == 95.05


def test_trace_layout_nests_and_places_bars():
    t0 = datetime(2026, 11, 25, tzinfo=UTC)

    def span(sid: str, parent: str | None, start_ms: int, end_ms: int | None) -> dict:
        return {
            "trace_id": "t", "span_id": sid, "parent_id": parent, "kind": "llm",
            "started_at": t0 + timedelta(milliseconds=start_ms),
            "ended_at": None if end_ms is None else t0 + timedelta(milliseconds=end_ms),
            "attributes": None, "children": [],
        }  # fmt: skip

    root = span("r", None, 0, 1000)
    child = span("c", "r", 250, 750)
    root["children"] = [child]
    total, rows = waterfall(flatten([root]), now=t0 + timedelta(seconds=2))
    assert total == 1000.0
    assert [(r["span_id"], r["depth"], r["offset_pct"], r["width_pct"]) for r in rows] == [
        ("r", 0, 0.0, 100.0),
        ("c", 1, 25.0, 50.0),
    ]
    nested = {**child, "attributes": {"tether.decision": {"decision": "deny", "rule": "x"}}}
    flat = {**child, "attributes": {"tether.decision": "approval_required",
                                    "tether.decision.reason": "needs a person"}}  # fmt: skip
    found = span_decisions([rows[0], nested, flat])
    assert [(d["decision"], d["reason"]) for d in found] == [
        ("deny", None),
        ("approval_required", "needs a person"),
    ]


def test_session_cookie_is_signed_and_expires(tmp_path: Path):
    settings = load_settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/t.db")
    state = State(settings=settings, engine=make_engine(settings.db_url))
    key = secret_key(state)
    assert (tmp_path / "home" / "secret_key").stat().st_mode & 0o777 == 0o600
    viewer = new_viewer("key_abc", "admin", "ops")
    value = encode_session(state, viewer, now=1000.0)
    assert decode_session(state, value, now=1001.0) == viewer
    assert decode_session(state, value, now=1000.0 + 13 * 3600) is None  # expired
    body, _, sig = value.partition(".")
    assert decode_session(state, body + "." + sig[::-1], now=1001.0) is None
    other = State(settings=settings, engine=state.engine)
    assert secret_key(other) == key  # the same home gives the same key after a restart
    assert role_for_scopes(("admin",)) == "admin"
    assert role_for_scopes(("read", "ingest")) == "read"
    assert role_for_scopes(("agent", "ingest")) is None
