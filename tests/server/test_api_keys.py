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


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_an_expired_key_is_refused_with_key_expired(api: Api) -> None:
    from datetime import UTC, datetime, timedelta

    from tether.store.keys import create_key

    r = api.client.post("/api/v1/keys", json={"scopes": ["read"], "expires_in": "30d"},
                        headers=api.admin)  # fmt: skip
    assert r.status_code == 201 and r.json()["expires_at"] and r.json()["status"] == "ok"
    assert api.client.get("/api/v1/runs", headers=_bearer(r.json()["key"])).status_code == 200
    _, secret = create_key(api.db, scopes="read", now=datetime.now(UTC) - timedelta(hours=2),
                           expires_in=timedelta(hours=1))  # fmt: skip
    refused = api.client.get("/api/v1/runs", headers=_bearer(secret))
    assert refused.status_code == 401
    err = refused.json()["error"]
    assert err["type"] == "key_expired" and "tether keys rotate" in err["message"]
    bad = api.client.post("/api/v1/keys", json={"scopes": ["read"], "expires_in": "soon"},
                          headers=api.admin)  # fmt: skip
    assert bad.status_code == 400 and "expires_in" in bad.json()["error"]["message"]


def test_rotate_returns_a_new_key_and_keeps_the_old_one_for_the_overlap(api: Api) -> None:
    made = api.client.post("/api/v1/keys", json={"scopes": ["read"], "name": "grafana"},
                           headers=api.admin).json()  # fmt: skip
    old = _bearer(made["key"])
    assert api.client.get("/api/v1/runs", headers=old).status_code == 200  # cached now
    r = api.client.post(f"/api/v1/keys/{made['id']}/rotate", json={"overlap": "1h"},
                        headers=api.admin)  # fmt: skip
    assert r.status_code == 200, r.text
    out = r.json()
    new = out["new"]
    assert new["key"] != made["key"] and new["scopes"] == ["read"] and new["name"] == "grafana"
    assert out["old"]["replaced_by"] == new["id"] and out["old"]["status"] == "rotating"
    assert api.client.get("/api/v1/runs", headers=_bearer(new["key"])).status_code == 200
    assert api.client.get("/api/v1/runs", headers=old).status_code == 200  # in its overlap
    again = api.client.post(f"/api/v1/keys/{made['id']}/rotate", json={}, headers=api.admin)
    assert again.status_code == 409
    # an overlap of 0s ends the old key at once (this process forgets its cached keys)
    r = api.client.post(f"/api/v1/keys/{new['id']}/rotate", json={"overlap": "0s"},
                        headers=api.admin)  # fmt: skip
    refused = api.client.get("/api/v1/runs", headers=_bearer(new["key"]))
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "key_expired"
    assert "use its replacement" in refused.json()["error"]["message"]
    newest = _bearer(r.json()["new"]["key"])
    assert api.client.get("/api/v1/runs", headers=newest).status_code == 200
    assert api.client.post("/api/v1/keys/key_nope/rotate", json={},
                           headers=api.admin).status_code == 404  # fmt: skip
    assert api.client.post(f"/api/v1/keys/{made['id']}/rotate", json={},
                           headers=api.triage).status_code == 403  # fmt: skip
    actions = [e.action for e in audit.list_entries(api.db)[0]]
    assert actions.count("key.rotated") == 2


def test_the_rotation_policy_refuses_keys_older_than_max_age_days(
    settings: Settings, db: Engine
) -> None:
    from datetime import UTC, datetime, timedelta

    from tether.store.keys import create_key

    policy = settings.model_copy(update={"keys": settings.keys.model_copy(
        update={"max_age_days": 30})})  # fmt: skip
    api = make_api(policy, db)
    stale, secret = create_key(db, scopes="read", now=datetime.now(UTC) - timedelta(days=31))
    refused = api.client.get("/api/v1/runs", headers=_bearer(secret))
    assert refused.status_code == 401
    err = refused.json()["error"]
    assert err["type"] == "key_expired" and err["code"] == "key_too_old"
    assert "keys.max_age_days" in err["message"]
    listed = {k["id"]: k for k in api.client.get("/api/v1/keys", headers=api.admin).json()["items"]}
    assert listed[stale.id]["status"] == "too_old" and listed[stale.id]["age_s"] > 30 * 86400
    # rotating it: the new key works; the old one works again for its overlap only
    r = api.client.post(f"/api/v1/keys/{stale.id}/rotate", json={"overlap": "1h"},
                        headers=api.admin)  # fmt: skip
    assert (
        api.client.get("/api/v1/runs", headers=_bearer(r.json()["new"]["key"])).status_code == 200
    )
    assert api.client.get("/api/v1/runs", headers=_bearer(secret)).status_code == 200
