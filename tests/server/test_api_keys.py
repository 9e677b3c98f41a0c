from __future__ import annotations

import pytest
from sqlalchemy import Engine

from tests.server.api_helpers import Api, make_api
from tether.config import Settings
from tether.store import audit


@pytest.fixture
def api(settings: Settings, db: Engine) -> Api:
    return make_api(settings, db)


def test_create_use_list_and_revoke_a_key(api: Api) -> None:
    r = api.client.post("/api/v1/keys", json={"scopes": ["read"], "name": "grafana"},
                        headers=api.admin)  # fmt: skip
    assert r.status_code == 201
    created = r.json()
    assert created["key"].startswith("tth_") and created["scopes"] == ["read"]
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert api.client.get("/api/v1/runs", headers=headers).status_code == 200
    listed = api.client.get("/api/v1/keys", headers=api.admin).json()["items"]
    mine = next(k for k in listed if k["id"] == created["id"])
    assert "key" not in mine and "hash" not in mine and mine["name"] == "grafana"
    gone = api.client.delete(f"/api/v1/keys/{created['id']}", headers=api.admin)
    assert gone.status_code == 200 and gone.json()["revoked_at"]
    # the key stops working at once, despite the authentication cache
    assert api.client.get("/api/v1/runs", headers=headers).status_code == 401
    assert api.client.delete(f"/api/v1/keys/{created['id']}", headers=api.admin).status_code == 404
    actions = [e.action for e in audit.list_entries(api.db)[0]]
    assert "key.created" in actions and "key.revoked" in actions


def test_keys_are_admin_only_and_validated(api: Api) -> None:
    assert api.client.get("/api/v1/keys", headers=api.read).status_code == 403
    body = {"scopes": ["read"]}
    assert api.client.post("/api/v1/keys", json=body, headers=api.triage).status_code == 403
    r = api.client.post("/api/v1/keys", json={"scopes": ["root"]}, headers=api.admin)
    assert r.status_code == 400 and "scope" in r.json()["error"]["message"]
    r = api.client.post("/api/v1/keys", json={"scopes": ["agent"]}, headers=api.admin)
    assert r.status_code == 400 and "agent" in r.json()["error"]["message"]
    r = api.client.post("/api/v1/keys", json={"scopes": []}, headers=api.admin)
    assert r.status_code == 400 and "scopes" in r.json()["error"]["message"]
