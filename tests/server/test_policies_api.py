"""`/api/v1/policies` and `/api/v1/audit`: apply (YAML or JSON), line-numbered 400s, versions,
history, diff, audit pages, verification and export, scopes, and the policies folder at start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from tests.server.api_helpers import Api, make_api
from tether.config import Settings, load_settings
from tether.core.errors import ConfigError
from tether.server.app import create_app
from tether.store import policies as policy_store
from tether.store.tables import audit_log

V1 = "agent: triage\ntools:\n  - {match: 'erp.delete_*', allow: false}\n  - {match: 'erp.*'}\n"
SHADOWED = (
    "agent: triage\ntools:\n  - {match: 'erp.*'}\n  - {match: 'erp.delete_*', allow: false}\n"
)
V2 = V1 + "on_uncertain: deny\n"
YAML = {"Content-Type": "application/yaml"}


@pytest.fixture
def api(settings: Settings, db: Engine) -> Api:
    return make_api(settings, db)


def test_apply_yaml_then_json_and_read_back(api: Api) -> None:
    r = api.client.post("/api/v1/policies", content=V1, headers={**api.admin, **YAML})
    assert r.status_code == 201
    body = r.json()
    assert (body["agent"], body["version"], body["changed"]) == ("triage", 1, True)
    assert body["warnings"] == []
    shadowed = api.client.post("/api/v1/policies", content=SHADOWED,
                               headers={**api.admin, **YAML})  # fmt: skip
    assert shadowed.status_code == 400
    assert shadowed.json()["error"]["message"] == (
        '<request>:4: tools[1]: rule "erp.delete_*" is never reached: tools[0] "erp.*" matches '
        "first. Fix: move tools[1] above tools[0] (first match wins)"
    )
    same = api.client.post("/api/v1/policies", content=V1, headers={**api.admin, **YAML})
    assert same.status_code == 200 and same.json()["version"] == 1
    r = api.client.post(
        "/api/v1/policies", json={"source": V2, "file": "triage.yaml"}, headers=api.admin
    )
    assert r.status_code == 201 and r.json()["version"] == 2

    latest = api.client.get("/api/v1/policies/triage", headers=api.read).json()
    assert latest["version"] == 2 and latest["source"] == V2
    assert latest["document"]["on_uncertain"] == "deny"
    assert latest["applied_by"].startswith("key:")
    old = api.client.get("/api/v1/policies/triage?version=1", headers=api.read).json()
    assert old["version"] == 1 and old["document"]["on_uncertain"] == "ask"
    listed = api.client.get("/api/v1/policies", headers=api.read).json()
    assert [(p["agent"], p["version"]) for p in listed["items"]] == [("triage", 2)]
    history = api.client.get("/api/v1/policies/triage/history", headers=api.read).json()
    assert [v["version"] for v in history["items"]] == [2, 1]
    diff = api.client.get("/api/v1/policies/triage/diff", headers=api.read).json()
    assert (diff["from_version"], diff["to_version"]) == (1, 2)
    assert "+on_uncertain: deny" in diff["diff"]
    diff = api.client.get("/api/v1/policies/triage/diff?from=2&to=1", headers=api.read).json()
    assert "-on_uncertain: deny" in diff["diff"]


def test_invalid_policy_is_a_400_with_lines(api: Api) -> None:
    bad = (
        "agent: triage\ntools:\n  - {match: x, aprroval: required}\n"
        "  - {match: y, rate_limit: lots}\n"
    )
    r = api.client.post("/api/v1/policies", content=bad, headers={**api.admin, **YAML})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request" and err["code"] == "invalid_policy"
    lines = err["message"].splitlines()
    assert lines[0] == (
        "<request>:3: tools[0].aprroval: unknown key `aprroval`. Fix: did you mean `approval`?"
    )
    assert lines[1].startswith("<request>:4: tools[1].rate_limit: ")
    assert [e["line"] for e in err["details"]["errors"]] == [3, 4]
    assert api.client.get("/api/v1/policies/triage", headers=api.read).status_code == 404
    for body, headers in [
        ("{not json", {"Content-Type": "application/json"}),
        (json.dumps({"text": V1}), {"Content-Type": "application/json"}),
        (b"\xff\xfe", YAML),
    ]:
        r = api.client.post("/api/v1/policies", content=body, headers={**api.admin, **headers})
        assert r.status_code == 400, body


def test_check_stores_nothing(api: Api) -> None:
    r = api.client.post("/api/v1/policies/check", content=V1, headers={**api.read, **YAML})
    assert r.status_code == 200 and r.json()["ok"] and r.json()["agent"] == "triage"
    assert r.json()["warnings"] == []
    r = api.client.post("/api/v1/policies/check", content="agent: [", headers={**api.read, **YAML})
    assert r.status_code == 400
    assert api.client.get("/api/v1/policies", headers=api.read).json()["items"] == []


def test_scopes_and_missing(api: Api) -> None:
    for headers in (api.read, api.triage, {}):
        r = api.client.post("/api/v1/policies", content=V1, headers={**headers, **YAML})
        assert r.status_code in (401, 403)
    assert api.client.get("/api/v1/policies").status_code == 401
    for path in (
        "/api/v1/policies/nobody",
        "/api/v1/policies/nobody/history",
        "/api/v1/policies/nobody/diff",
    ):
        r = api.client.get(path, headers=api.read)
        assert r.status_code == 404 and "tether policy apply" in r.json()["error"]["message"]
    api.client.post("/api/v1/policies", content=V1, headers={**api.admin, **YAML})
    assert api.client.get("/api/v1/policies/triage?version=5", headers=api.read).status_code == 404
    assert api.client.get("/api/v1/policies/triage?version=0", headers=api.read).status_code == 400


def test_audit_pages_verify_and_tamper(api: Api) -> None:
    api.client.post("/api/v1/policies", content=V1, headers={**api.admin, **YAML})
    api.client.post("/api/v1/policies", content=V2, headers={**api.admin, **YAML})
    page = api.client.get("/api/v1/audit?action=policy.applied&limit=1", headers=api.read).json()
    assert page["items"][0]["data"]["version"] == 2 and page["next_cursor"]
    more = api.client.get(
        f"/api/v1/audit?action=policy.applied&cursor={page['next_cursor']}", headers=api.read
    ).json()
    assert [e["data"]["version"] for e in more["items"]] == [1] and more["next_cursor"] is None
    assert api.client.get("/api/v1/audit?cursor=x", headers=api.read).status_code == 400
    ok = api.client.get("/api/v1/audit/verify", headers=api.read).json()
    assert ok["ok"] and ok["count"] >= 2
    export = api.client.get("/api/v1/audit/export", headers=api.read)
    rows = [json.loads(x) for x in export.text.splitlines()]
    assert export.headers["content-type"].startswith("application/x-ndjson")
    assert len(rows) == ok["count"] and rows[-1]["hash"] == ok["head_hash"]

    target = more["items"][0]["seq"]
    with api.db.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == target).values(actor="mallory"))
    bad = api.client.get("/api/v1/audit/verify", headers=api.read).json()
    assert not bad["ok"] and bad["first_bad_seq"] == target
    assert bad["first_bad"]["actor"] == "mallory"
    assert api.client.get("/api/v1/audit").status_code == 401


def test_policies_folder_is_loaded_at_start(tmp_path: Path, db: Engine, db_url: str) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "triage.yaml").write_text(V1)
    settings = load_settings(home=tmp_path / "home", database_url=db_url, policies=folder)
    with TestClient(create_app(settings, engine=db)):
        pass
    assert policy_store.latest_version(db, "triage") == 1
    (folder / "triage.yaml").write_text(V2)
    with TestClient(create_app(settings, engine=db)) as client:
        assert client.app.state.tether.policies_loaded == [("triage", 2)]  # type: ignore[attr-defined]
    (folder / "broken.yaml").write_text("agent: broken\ntools: 3\n")
    # other areas' lifespans may run start-up inside a task group, which wraps the error
    app = create_app(settings, engine=db)
    with pytest.raises((ConfigError, ExceptionGroup)) as info, TestClient(app):
        pass
    error = _leaf(info.value)
    assert isinstance(error, ConfigError)
    assert f"{folder / 'broken.yaml'}:2: tools:" in error.message


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def test_absurdly_deep_bodies_are_400_not_500(api: Api) -> None:
    deep = "[" * 50_000 + "]" * 50_000
    admin = api.admin
    for path, ctype in (("/api/v1/policies", "application/yaml"),
                        ("/api/v1/policies", "application/json"),
                        ("/api/v1/policies/check", "application/json")):  # fmt: skip
        r = api.client.post(path, content=deep, headers={**admin, "content-type": ctype})
        assert r.status_code == 400, (path, ctype, r.text[:200])
        assert "deeply" in r.json()["error"]["message"]
    agent = api.key("agent", agent="triage")
    r = api.client.post("/llm/v1/chat/completions", content=deep,
                        headers={**agent, "content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request"
    assert api.client.get("/api/v1/policies", headers=admin).json()["items"] == []
