"""`tether drift` and `tether alerts list|ack` on the local store (SQLite and PostgreSQL):
the drift table and JSON, a bad duration named in one line, and an alert acknowledged."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from typer.testing import CliRunner

from tether.cli.main import app
from tether.demo.watch_traffic import SUPPORT_V1, SUPPORT_V2, steady_runs
from tether.store.alerts import AlertDraft, raise_alert
from tether.store.ingest import write_spans


def env(tmp_path: Path, db_url: str) -> dict[str, str | None]:
    return {"TETHER_HOME": str(tmp_path / "home"), "TETHER_DATABASE_URL": db_url,
            "TETHER_URL": None, "TETHER_API_KEY": None, "COLUMNS": "200"}  # fmt: skip


def test_drift_prints_what_moved_and_json(tmp_path: Path, db: Engine, db_url: str) -> None:
    now = datetime.now(UTC)
    rng = random.Random(41)
    runs = [*steady_runs(rng, now - timedelta(days=8), now - timedelta(days=1), runs_per_hour=3,
                         agent="support", version="v1", users=["a"], behaviour=SUPPORT_V1),
            *steady_runs(rng, now - timedelta(days=1), now - timedelta(minutes=1),
                         runs_per_hour=6, agent="support", version="v2", users=["a"],
                         behaviour=SUPPORT_V2)]  # fmt: skip
    flat = [s for r in runs for s in r]
    for i in range(0, len(flat), 2000):
        write_spans(db, flat[i : i + 2000], now=now, source="otlp")
    runner = CliRunner()
    # no server ran the profiling pass: the command brings the profiles up to date itself
    table = runner.invoke(app, ["drift", "support"], env=env(tmp_path, db_url))
    assert table.exit_code == 0, table.output
    assert "support: drifted" in table.stdout
    assert "appeared: crm.lookup_customer > billing.refund > helpdesk.reply" in table.stdout
    as_json = runner.invoke(app, ["drift", "support", "--window", "1d", "--json"],
                            env=env(tmp_path, db_url))  # fmt: skip
    body = json.loads(as_json.stdout)
    assert body["drifted"] and "sequences" in body["moved"]
    bad = runner.invoke(
        app, ["drift", "support", "--baseline", "a week"], env=env(tmp_path, db_url)
    )
    assert bad.exit_code == 2
    assert "--baseline" in bad.output and "7d" in bad.output


def test_alerts_list_and_ack(tmp_path: Path, db: Engine, db_url: str) -> None:
    now = datetime.now(UTC)
    draft = AlertDraft(kind="cost_anomaly", dedup_key="cost:day:user:bob", subject="user bob",
                       message="user bob spent $9.00 in the day", bucket_at=now,
                       value_nusd=9_000_000_000, expected_nusd=1_000_000_000,
                       low_nusd=500_000_000, high_nusd=2_000_000_000)  # fmt: skip
    alert = raise_alert(db, draft, now=now, cooldown=timedelta(hours=1)).alert
    runner = CliRunner()
    listed = runner.invoke(app, ["alerts", "list", "--json"], env=env(tmp_path, db_url))
    assert listed.exit_code == 0, listed.output
    [item] = json.loads(listed.stdout)["items"]
    assert (item["id"], item["high_usd"], item["value_usd"]) == (alert.id, 2.0, 9.0)
    done = runner.invoke(app, ["alerts", "ack", alert.id, "--note", "expected"],
                         env=env(tmp_path, db_url))  # fmt: skip
    assert done.exit_code == 0, done.output
    assert f"acknowledged {alert.id}" in done.stdout
    assert json.loads(runner.invoke(app, ["alerts", "list", "--json"],
                                    env=env(tmp_path, db_url)).stdout)["items"] == []  # fmt: skip
    again = runner.invoke(app, ["alerts", "ack", alert.id], env=env(tmp_path, db_url))
    assert again.exit_code == 1 and "already acknowledged" in again.output
