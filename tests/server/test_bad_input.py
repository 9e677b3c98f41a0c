"""Bad input is a 400 naming the problem, never a 500: out-of-range numbers, non-ASCII cookies
and CSRF tokens, impossible span times. (tests/server/test_openapi_fuzz.py covers the rest.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from sqlalchemy import Engine, func, select

from tests.server.api_helpers import Api, make_api
from tether.config import Settings
from tether.server.console import sources
from tether.server.deps import State
from tether.store.tables import spans

HUGE = "99999999999999999999"


@pytest.fixture
def api(settings: Settings, db: Engine) -> Api:
    api = make_api(settings, db)
    r = api.client.post("/api/v1/policies", content="agent: a\n", headers={**api.admin,
                        "Content-Type": "application/yaml"})  # fmt: skip
    assert r.status_code == 201
    return api


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("/api/v1/kpi?target_cost_usd=1e20", "target_cost_usd"),
        (f"/api/v1/policies/a?version={HUGE}", "version"),
        (f"/api/v1/policies/a/diff?from={HUGE}", "from"),
        (f"/api/v1/policies/a/diff?to={HUGE}", "to"),
    ],
)
def test_out_of_range_numbers_are_400_naming_the_parameter(api: Api, url: str, named: str) -> None:
    r = api.client.get(url, headers=api.read)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request"
    assert named in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("/api/v1/kpi?from=0001-01-01T00:00:00%2B05:00", "from"),
        ("/api/v1/costs?to=9999-12-31T23:00:00-05:00", "to"),
        ("/api/v1/runs?started_after=0001-01-01T00:00:00%2B01:00", "started_after"),
    ],
)
def test_times_with_no_utc_equivalent_are_400_naming_the_parameter(
    api: Api, url: str, named: str
) -> None:
    r = api.client.get(url, headers=api.read)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith(f"{named}: ")


def test_a_window_ending_near_the_first_representable_time_starts_there(api: Api) -> None:
    # the default 30 days before `to` would be before year 1: the window starts at year 1
    r = api.client.get("/api/v1/kpi?to=0001-01-02T00:00:00", headers=api.read)
    assert r.status_code == 200, r.text
    assert r.json()["start"].startswith("0001-01-01T00:00:00")
    assert api.client.get("/api/v1/costs?to=0001-01-02", headers=api.read).status_code == 200


def test_non_ascii_cookies_and_csrf_tokens_are_refused_not_a_crash(api: Api) -> None:
    client = api.client
    login = client.post(
        "/login", data={"csrf": "é", "api_key": "x"},
        headers={"cookie": "tether_login_csrf=éx".encode()},
    )  # fmt: skip
    assert login.status_code == 400 and "form expired" in login.text
    page = client.get("/runs", headers={"cookie": "tether_session=é☃.☃".encode()},
                      follow_redirects=False)  # fmt: skip
    assert page.status_code in (302, 303, 307) and "/login" in page.headers["location"]


def _export(start_ns: int, end_ns: int) -> bytes:
    span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="s",
                start_time_unix_nano=start_ns, end_time_unix_nano=end_ns)  # fmt: skip
    req = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )
    return req.SerializeToString()


@pytest.mark.parametrize(
    ("start", "end", "says"),
    [
        (2**64 - 1, 0, "start time"),
        (1_700_000_000 * 10**9, 2**64 - 1, "end time"),
        (1_700_000_000 * 10**9, 1_600_000_000 * 10**9, "is before its start time"),
    ],
)
def test_impossible_span_times_are_400_and_store_nothing(
    api: Api, db: Engine, start: int, end: int, says: str
) -> None:
    r = api.client.post("/v1/traces", content=_export(start, end), headers={**api.admin,
                        "content-type": "application/x-protobuf"})  # fmt: skip
    assert r.status_code == 400 and says in r.json()["error"]["message"]
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(spans)).scalar_one() == 0


def test_budget_burn_shows_a_sub_second_run_as_its_duration(settings: Settings, db: Engine) -> None:
    started = datetime(2026, 1, 1, tzinfo=UTC)
    run = {"id": "run_x", "agent": None, "started_at": started,
           "ended_at": started + timedelta(milliseconds=276), "cost_nusd": 0,
           "input_tokens": 0, "output_tokens": 0, "llm_calls": 0, "tool_calls": 0}  # fmt: skip
    burn = {b.label: b for b in sources.run_burn(State(settings=settings, engine=db), run, started)}
    assert burn["duration"].spent == pytest.approx(0.276)
