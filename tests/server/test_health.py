from __future__ import annotations

from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tests.conftest import ServerProcess
from tether.config import load_settings
from tether.server.app import create_app
from tether.store.keys import create_key


def test_served_process_is_healthy_and_ready(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    missing = httpx.get(server.url + "/api/v1/nope")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"


def test_unready_says_why_only_to_a_key_holder(sqlite_db: Engine, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", database_url=str(sqlite_db.url))
    _, secret = create_key(sqlite_db, scopes="read")
    with sqlite_db.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000_gone'"))
    client = TestClient(create_app(settings, engine=sqlite_db))
    anonymous = client.get("/readyz")
    assert anonymous.status_code == 503 and anonymous.json() == {"status": "unavailable"}
    wrong = client.get("/readyz", headers={"Authorization": "Bearer tth_not_a_key"})
    assert wrong.json() == {"status": "unavailable"}
    keyed = client.get("/readyz", headers={"Authorization": f"Bearer {secret}"})
    assert keyed.status_code == 503
    assert "0000_gone" in keyed.json()["reason"] and "tether db upgrade" in keyed.json()["reason"]
