"""The console's drift and alerts pages and the Home/Costs cost alert flags, on SQLite and
PostgreSQL: a drifting agent's report, a spike alert with its range and runs, acknowledgement
by an admin (a read-only key may look, not acknowledge)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.ui.test_console import csrf_of, login
from tether.config import load_settings
from tether.demo.watch_traffic import SUPPORT_V1, SUPPORT_V2, run_spans, steady_runs
from tether.server.app import create_app
from tether.store.alerts import list_alerts
from tether.store.ingest import write_spans
from tether.store.keys import create_key
from tether.store.watch import WatchConfig, cost_pass

USERS = ("alice", "bob", "carol")


def _seed(db: Engine, now: datetime) -> None:
    rng = random.Random(31)
    hour = now.replace(minute=0, second=0, microsecond=0)
    runs = list(
        steady_runs(
            rng,
            hour - timedelta(days=21),
            hour - timedelta(days=1),
            runs_per_hour=3,
            agent="support",
            version="v1",
            users=USERS,
            behaviour=SUPPORT_V1,
        )
    )
    runs += list(
        steady_runs(
            rng,
            hour - timedelta(days=1),
            hour,
            runs_per_hour=6,
            agent="support",
            version="v2",
            users=USERS,
            behaviour=SUPPORT_V2,
        )
    )
    runs += [run_spans(rng, hour + (now - hour) * i / 13, agent="support", version="v2",
                       user="alice", behaviour=SUPPORT_V2, cost_factor=4.0)
             for i in range(12)]  # fmt: skip
    flat = [s for r in runs for s in r]
    for i in range(0, len(flat), 2000):
        write_spans(db, flat[i : i + 2000], now=now, source="otlp")
    cost_pass(db, now=now, config=WatchConfig())


def test_drift_and_alert_pages(db: Engine, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", database_url=str(db.url))
    _, reader = create_key(db, scopes="read", name="reader")
    _, admin = create_key(db, scopes="admin", name="admin")
    with TestClient(create_app(settings, engine=db), follow_redirects=False) as client:
        login(client, reader)
        assert "No finished runs profiled yet" in client.get("/drift").text
        assert "No alerts" in client.get("/alerts").text
        now = datetime.now(UTC)
        _seed(db, now)
        page = client.get("/drift?agent=support")
        assert page.status_code == 200
        assert "drifted" in page.text
        assert "billing.refund" in page.text  # an appeared sequence
        assert "<code>crm.lookup_customer → kb.search → helpdesk.reply</code>" in page.text, (
            page.text
        )
        assert client.get("/drift?agent=support&baseline=7days").status_code == 400
        alerts = client.get("/alerts")
        [alice] = [
            a
            for a in list_alerts(db, kind="cost_anomaly")[0]
            if a.subject == "user alice" and a.detail and a.detail["granularity"] == "hour"
        ]
        assert alice.id in alerts.text and "normal range" in alerts.text
        assert "Runs that drove it" in alerts.text
        home = client.get("/")
        assert "Cost alerts (7 d)" in home.text and "user alice" in home.text
        assert "trailing median" not in home.text
        costs = client.get("/costs")
        assert "user alice" in costs.text
        # a read-only session may not acknowledge
        denied = client.post(f"/alerts/{alice.id}/ack", data={"csrf": csrf_of(alerts.text)})
        assert denied.status_code == 403
        client.cookies.clear()
        login(client, admin)
        token = csrf_of(client.get("/alerts").text)
        done = client.post(f"/alerts/{alice.id}/ack", data={"csrf": token, "note": "load test"})
        assert done.status_code == 303
        acked = client.get("/alerts?status=acknowledged").text
        assert alice.id in acked and "load test" in acked
        again = client.post(f"/alerts/{alice.id}/ack", data={"csrf": token})
        assert again.status_code == 409 and "already acknowledged" in again.text


def test_drift_page_shows_a_model_changes_eval_re_run(db: Engine, tmp_path: Path) -> None:
    from tether.store.alerts import AlertDraft, raise_alert, update_detail

    settings = load_settings(home=tmp_path / "home", database_url=str(db.url))
    _, reader = create_key(db, scopes="read", name="reader")
    now = datetime.now(UTC)
    raised = raise_alert(db, AlertDraft(
        kind="model_change", dedup_key="model:support:gpt-4o-mini-2025-01-31",
        subject="agent support", message="agent support is now served gpt-4o-mini-2025-01-31",
        agent="support", bucket_at=now, detail={"eval": {"status": "queued"}}),
        now=now, cooldown=timedelta(hours=1))  # fmt: skip
    update_detail(db, raised.alert.id, "eval", {"status": "finished", "eval_id": "eval_abc",
                                                "successes": 19, "total": 20})  # fmt: skip
    with TestClient(create_app(settings, engine=db), follow_redirects=False) as client:
        login(client, reader)
        page = client.get("/drift").text
    assert "eval re-run:" in page and ">finished</span>" in page
    assert 'href="/evals/eval_abc"' in page and "19/20 at target" in page
