"""The drift and alert routes, and the background cost loop sending a spike to a JSON and a
Slack-shaped webhook once (de-duplicated), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.server.api_helpers import make_api
from tether.config import Settings, load_settings
from tether.demo.watch_traffic import SUPPORT_V1, SUPPORT_V2, run_spans, steady_runs
from tether.server.app import create_app
from tether.store.ingest import write_spans
from tether.store.keys import create_key
from tether.store.profiles import profile_runs
from tether.store.watch import WatchConfig, cost_pass

USERS = ("alice", "bob", "carol")


def _write(db: Engine, runs: list[list[Any]], now: datetime) -> None:
    flat = [s for r in runs for s in r]
    for i in range(0, len(flat), 2000):
        write_spans(db, flat[i : i + 2000], now=now, source="otlp")


def _drifting(db: Engine, now: datetime) -> None:
    rng = random.Random(21)
    week = steady_runs(
        rng,
        now - timedelta(days=8),
        now - timedelta(days=1),
        runs_per_hour=4,
        agent="support",
        version="v1",
        users=USERS,
        behaviour=SUPPORT_V1,
    )
    day = steady_runs(
        rng,
        now - timedelta(days=1),
        now - timedelta(minutes=5),
        runs_per_hour=8,
        agent="support",
        version="v2",
        users=USERS,
        behaviour=SUPPORT_V2,
    )
    _write(db, [*week, *day], now)  # fmt: skip
    profile_runs(db, now=now)


def _spike(db: Engine, now: datetime) -> None:
    """Three weeks of steady spend, then alice spending three times as much this hour."""
    rng = random.Random(22)
    hour = now.replace(minute=0, second=0, microsecond=0)
    runs = list(
        steady_runs(
            rng,
            hour - timedelta(days=21),
            hour,
            runs_per_hour=3,
            agent="support",
            version="v1",
            users=USERS,
            behaviour=SUPPORT_V1,
        )
    )
    runs += [run_spans(rng, hour + (now - hour) * i / 13, agent="support", version="v1",
                       user="alice", behaviour=SUPPORT_V1, cost_factor=3.0)
             for i in range(12)]  # fmt: skip
    _write(db, runs, now)


def test_drift_route_says_what_moved(settings: Settings, db: Engine) -> None:
    api = make_api(settings, db)
    _drifting(db, datetime.now(UTC))
    r = api.client.get("/api/v1/drift/support", headers=api.read)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["drifted"] and "sequences" in body["moved"]
    assert any("billing.refund" in s["tools"] for s in body["sequences"]["appeared"])
    seq = next(m for m in body["metrics"] if m["metric"] == "sequences")
    assert seq["effect"] > 0.05 and seq["p_adjusted"] < 0.01
    bad = api.client.get("/api/v1/drift/support?baseline=7days", headers=api.read)
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request"
    assert "baseline" in bad.json()["error"]["message"]
    assert api.client.get("/api/v1/drift/support").status_code == 401


def test_alert_routes_list_get_and_acknowledge(settings: Settings, db: Engine) -> None:
    api = make_api(settings, db)
    now = datetime.now(UTC)
    _spike(db, now)
    raised = cost_pass(db, now=now, config=WatchConfig())
    alert_id = next(r.alert.id for r in raised if r.alert.dedup_key.endswith(":user:alice"))
    listed = api.client.get("/api/v1/alerts?kind=cost_anomaly&status=open", headers=api.read)
    assert listed.status_code == 200
    assert alert_id in [a["id"] for a in listed.json()["items"]]
    one = api.client.get(f"/api/v1/alerts/{alert_id}", headers=api.read).json()
    assert one["low_usd"] <= one["expected_usd"] <= one["high_usd"] < one["value_usd"]
    assert one["detail"]["top_runs"]
    # a read key may look but not acknowledge
    assert api.client.post(f"/api/v1/alerts/{alert_id}/ack", headers=api.read).status_code == 403
    ack = api.client.post(f"/api/v1/alerts/{alert_id}/ack", json={"note": "load test"},
                          headers=api.admin)  # fmt: skip
    assert ack.status_code == 200
    assert (ack.json()["status"], ack.json()["ack_note"]) == ("acknowledged", "load test")
    again = api.client.post(f"/api/v1/alerts/{alert_id}/ack", headers=api.admin)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_acknowledged"
    assert api.client.get("/api/v1/alerts/alrt_nope", headers=api.read).status_code == 404
    assert api.client.get("/api/v1/alerts?status=closed", headers=api.read).status_code == 400


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    got: list[tuple[str, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", got
    httpd.shutdown()
    httpd.server_close()


def _wait(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met in time")


def test_the_cost_loop_sends_a_spike_once_to_json_and_slack_hooks(
    tmp_path: Path, db_url: str, db: Engine, receiver: tuple[str, list[tuple[str, Any]]]
) -> None:
    url, got = receiver
    settings = load_settings(
        home=tmp_path / "home", database_url=db_url,
        webhooks=[{"url": f"{url}/json"}, {"url": f"{url}/slack", "format": "slack"}],
        watch={"interval_s": 0.2, "drift_interval_s": 3600},
    )  # fmt: skip
    _spike(db, datetime.now(UTC))
    _, secret = create_key(db, scopes="read")
    with TestClient(create_app(settings, engine=db)) as client:

        def alice(path: str) -> list[dict[str, Any]]:
            return [b for p, b in got if p == path and "user alice" in json.dumps(b)]

        _wait(lambda: alice("/json") and alice("/slack"))
        body = alice("/json")[0]
        assert body["type"] == "alert.raised" and body["ack"].startswith("tether alerts ack")
        assert body["alert"]["high_usd"] < body["alert"]["value_usd"]
        slack = alice("/slack")[0]
        assert "user alice" in slack["text"] and "Expected range" in json.dumps(slack["blocks"])
        alert_id = body["alert"]["id"]

        def sent() -> int:
            return sum(alert_id in json.dumps(b) for _, b in got)

        assert sent() == 2  # one JSON, one Slack
        # later passes see the same interval again: they update the alert, they send nothing
        first_seen = body["alert"]["last_seen_at"]
        headers = {"Authorization": f"Bearer {secret}"}
        _wait(lambda: client.get(f"/api/v1/alerts/{alert_id}", headers=headers)
              .json()["last_seen_at"] > first_seen)  # fmt: skip
        assert sent() == 2


def test_evaluate_runs_the_passes_now_admin_only(settings: Settings, db: Engine) -> None:
    api = make_api(settings, db)
    now = datetime.now(UTC)
    _spike(db, now)
    assert api.client.post("/api/v1/watch/evaluate", headers=api.read).status_code == 403
    r = api.client.post("/api/v1/watch/evaluate", headers=api.admin)
    assert r.status_code == 200, r.text
    body = r.json()
    subjects = {a["subject"] for a in body["raised"] if a["kind"] == "cost_anomaly"}
    assert "user alice" in subjects
    assert body["notified"] == len(body["raised"])  # all new (no webhook configured: none sent)
    again = api.client.post("/api/v1/watch/evaluate", headers=api.admin).json()
    assert again["notified"] == 0
