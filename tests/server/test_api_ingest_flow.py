from __future__ import annotations

import pytest
from sqlalchemy import Engine

from tests.ops.promtext import total, value
from tests.server.api_helpers import Api, make_api
from tether.config import Settings

TRACE = "5b8efff798038103d269b633813fc60c"
NS = 1_764_072_000_000_000_000  # 2025-11-25T12:00:00Z


def _attr(key: str, value: str | int) -> dict[str, object]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _payload() -> dict[str, object]:
    root = {
        "traceId": TRACE, "spanId": "eee19b7ec3c1b174", "name": "invoice-triage",
        "startTimeUnixNano": str(NS), "endTimeUnixNano": str(NS + 3_000_000_000),
        "attributes": [_attr("tether.agent", "invoice-triage"), _attr("tether.agent_version", "v3"),
                       _attr("tether.task_id", "INV-1"), _attr("tether.user", "alice")],
    }  # fmt: skip
    llm = {
        "traceId": TRACE, "spanId": "eee19b7ec3c1b175", "parentSpanId": "eee19b7ec3c1b174",
        "name": "chat gpt-4o-mini", "startTimeUnixNano": str(NS + 1_000_000_000),
        "endTimeUnixNano": str(NS + 2_000_000_000),
        "attributes": [_attr("gen_ai.operation.name", "chat"),
                       _attr("gen_ai.request.model", "gpt-4o-mini"),
                       _attr("gen_ai.usage.input_tokens", 1000),
                       _attr("gen_ai.usage.output_tokens", 200)],
    }  # fmt: skip
    return {"resourceSpans": [{"resource": {"attributes": []},
                               "scopeSpans": [{"spans": [root, llm]}]}]}  # fmt: skip


@pytest.fixture
def api(settings: Settings, db: Engine) -> Api:
    return make_api(settings, db)


def test_otlp_spans_show_up_as_a_run_in_the_api_and_metrics(api: Api) -> None:
    collector = api.key("ingest")  # not bound to an agent: it may send any agent's spans
    r = api.client.post("/v1/traces", json=_payload(), headers=collector)
    assert r.status_code == 200, r.text
    runs = api.client.get("/api/v1/runs", params={"agent": "invoice-triage"},
                          headers=api.read).json()["items"]  # fmt: skip
    assert len(runs) == 1
    run = runs[0]
    assert (run["version"], run["task_id"], run["user"], run["status"]) == (
        "v3",
        "INV-1",
        "alice",
        "succeeded",
    )
    assert (run["input_tokens"], run["output_tokens"], run["llm_calls"]) == (1000, 200, 1)
    assert run["cost_usd"] > 0  # priced from the bundled table
    detail = api.client.get(f"/api/v1/runs/{run['id']}", headers=api.read).json()
    assert [c["kind"] for c in detail["spans"][0]["children"]] == ["llm"]
    metrics = api.client.get("/metrics", headers=api.read).text
    assert value(metrics, "tether_spans_ingested_total", source="otlp") == 2
    assert total(metrics, "tether_tokens_total", agent="invoice-triage", direction="output") == 200
