"""The demo's watch scenario: two weeks of a helpdesk agent's history sent as OTLP (with their
own timestamps), a v2 that drifts over the last day, and one user's spend spiking in the
current hour; then tether's watch passes run (`POST /api/v1/watch/evaluate`) and the demo
reports the drift verdict and the cost alert. Public surfaces only: OTLP ingest and the API."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from tether.core.money import nusd_to_usd
from tether.core.records import SpanRecord
from tether.demo.scenarios import Demo
from tether.demo.watch_traffic import SUPPORT_V1, SUPPORT_V2, run_spans, steady_runs

AGENT = "helpdesk"
USERS = ("dana", "eli", "fay", "gus")
HISTORY_DAYS = 15
BATCH = 600


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    return {"stringValue": str(v)}


def _attrs(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in values.items() if v is not None]


def _ns(at: datetime) -> str:
    return str(int(at.timestamp() * 1_000_000) * 1000)


def otlp_span(s: SpanRecord) -> dict[str, Any]:
    """One span in OTLP/JSON, with the attributes tether's ingest reads."""
    a: dict[str, Any] = dict(s.attributes)
    if s.is_root:
        who = s.attribution
        a.update({"tether.agent": who.agent, "tether.agent_version": who.version,
                  "tether.user": who.user, "tether.task_id": who.task_id,
                  "tether.span.kind": "agent"})  # fmt: skip
    elif s.kind == "llm":
        a.update({"gen_ai.request.model": s.model, "gen_ai.response.model": s.model_served,
                  "gen_ai.usage.input_tokens": s.input_tokens,
                  "gen_ai.usage.output_tokens": s.output_tokens,
                  "tether.cost_usd": str(nusd_to_usd(s.cost_nusd or 0))})  # fmt: skip
    elif s.kind == "tool":
        a.update({"gen_ai.tool.name": s.name, "tether.span.kind": "tool"})
    span: dict[str, Any] = {
        "traceId": s.trace_id, "spanId": s.span_id, "name": s.name,
        "startTimeUnixNano": _ns(s.started_at),
        "endTimeUnixNano": _ns(s.ended_at or s.started_at), "attributes": _attrs(a),
        "status": {"code": 2, "message": s.error} if s.status == "error" else {"code": 1},
    }  # fmt: skip
    if s.parent_id:
        span["parentSpanId"] = s.parent_id
    return span


def _send(client: httpx.Client, spans: list[SpanRecord]) -> None:
    for i in range(0, len(spans), BATCH):
        body = {"resourceSpans": [{
            "resource": {"attributes": _attrs({"service.name": AGENT})},
            "scopeSpans": [{"scope": {"name": "tether-demo"},
                            "spans": [otlp_span(s) for s in spans[i : i + BATCH]]}],
        }]}  # fmt: skip
        resp = client.post("/v1/traces", json=body)
        if resp.status_code >= 300:
            raise RuntimeError(f"OTLP ingest refused the helpdesk history: {resp.text}")


def traffic(now: datetime, rng: random.Random) -> list[SpanRecord]:
    """Two weeks of v1, the last day on a drifting v2, and dana's spend tripled this hour."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    # v2 starts inside the current window (the last 24 h), so its sequences are new there
    day_ago = hour - timedelta(hours=22)
    runs = [*steady_runs(rng, hour - timedelta(days=HISTORY_DAYS), day_ago, runs_per_hour=2,
                         agent=AGENT, version="v1", users=USERS, behaviour=SUPPORT_V1),
            *steady_runs(rng, day_ago, hour, runs_per_hour=4, agent=AGENT, version="v2",
                         users=USERS, behaviour=SUPPORT_V2)]  # fmt: skip
    elapsed = max(now - hour, timedelta(minutes=1))
    runs += [run_spans(rng, hour + elapsed * i / 21, agent=AGENT, version="v2", user="dana",
                       behaviour=SUPPORT_V2, cost_factor=3.0) for i in range(20)]  # fmt: skip
    return [s for r in runs for s in r if s.started_at < now]


def scenario_watch(demo: Demo) -> None:
    if not demo.admin_key:
        demo.notes.append("watch scenario skipped: it needs an admin key to run the passes")
        return
    headers = {"Authorization": f"Bearer {demo.admin_key}"}
    now = datetime.now(UTC)
    with httpx.Client(base_url=demo.url, headers=headers, timeout=60) as client:
        _send(client, traffic(now, demo.rng))
        done = client.post("/api/v1/watch/evaluate")
        done.raise_for_status()
        drift = client.get(f"/api/v1/drift/{AGENT}", params={"baseline": "7d", "window": "1d"})
        drift.raise_for_status()
    report = drift.json()
    moved = ", ".join(report["moved"]) or "nothing"
    appeared = [" > ".join(s["tools"]) for s in report["sequences"]["appeared"][:1]]
    demo.notes.append(
        f"drift: {AGENT} {'drifted' if report['drifted'] else 'did not drift'} over the last day "
        f"({report['window_runs']} runs against {report['baseline_runs']}); moved: {moved}"
        + (f"; new sequence {appeared[0]}" if appeared else "")
        + f" — `tether drift {AGENT}`"
    )
    cost = [a for a in done.json()["raised"] if a["kind"] == "cost_anomaly"
            and a["subject"] == "user dana"]  # fmt: skip
    if cost:
        a = cost[0]
        demo.notes.append(
            f"cost alert {a['id']}: user dana spent ${Decimal(str(a['value_usd'])):.2f}, "
            f"expected range ${a['low_usd']:.2f} to ${a['high_usd']:.2f} — `tether alerts list`"
        )
    else:
        demo.notes.append("cost alert: dana's spike raised no alert (see `tether alerts list`)")


WATCH = [("helpdesk agent: a drifting v2 and a user's cost spike (drift and alerts)",
          scenario_watch)]  # fmt: skip
