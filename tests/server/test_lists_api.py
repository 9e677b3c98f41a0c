"""`/api/v1/lists`: the registry's named lists through the REST API and the CLI: scopes,
create / replace / edit / delete, 409 while a policy names the list, and a policy apply that
names a missing list refused with its line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.server.api_helpers import Api, make_api
from tether.config import Settings

POLICY = "agent: triage\nlists:\n  vip: {registry: vip-customers}\ntools:\n" \
         "  - {match: 'crm.*', when: {email: {in_list: vip}}}\n"  # fmt: skip
YAML = {"Content-Type": "application/yaml"}


@pytest.fixture
def api(settings: Settings, db: Engine) -> Api:
    return make_api(settings, db)


def test_lists_crud_scopes_and_policies(api: Api) -> None:
    c = api.client
    assert c.put("/api/v1/lists/vip-customers", json={"entries": ["a@x.example"]},
                 headers=api.read).status_code == 403  # fmt: skip
    refused = c.post("/api/v1/policies", content=POLICY, headers={**api.admin, **YAML})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith(
        "<request>:3: lists.vip.registry: no registry list named `vip-customers`"
    )
    made = c.put("/api/v1/lists/vip-customers", json={"entries": ["A@x.example", "a@x.example",
                 "b@y.example"], "description": "VIPs"}, headers=api.admin)  # fmt: skip
    assert made.status_code == 200, made.text
    assert (made.json()["size"], made.json()["version"]) == (2, 1)
    edited = c.patch("/api/v1/lists/vip-customers", json={"add": ["c@z.example"],
                     "remove": ["b@y.example"]}, headers=api.admin)  # fmt: skip
    assert edited.json()["entries"] == ["A@x.example", "c@z.example"]
    listed = c.get("/api/v1/lists", headers=api.read).json()["items"]
    assert [(i["name"], i["size"], i["version"]) for i in listed] == [("vip-customers", 2, 2)]
    assert "entries" not in listed[0]
    assert c.post("/api/v1/policies", content=POLICY,
                  headers={**api.admin, **YAML}).status_code == 201  # fmt: skip
    busy = c.delete("/api/v1/lists/vip-customers", headers=api.admin)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "list_in_use"
    assert "triage" in busy.json()["error"]["message"]
    c.post("/api/v1/policies", content="agent: triage\n", headers={**api.admin, **YAML})
    assert c.delete("/api/v1/lists/vip-customers", headers=api.admin).status_code == 204
    assert c.get("/api/v1/lists/vip-customers", headers=api.read).status_code == 404
    audit = c.get("/api/v1/audit", params={"subject": "list:vip-customers"},
                  headers=api.admin).json()["items"]  # fmt: skip
    assert [e["action"] for e in audit][::-1] == ["list.created", "list.changed", "list.deleted"]


def test_cli_lists_on_the_local_store(tmp_path: Path, settings: Settings, db: Engine) -> None:
    env = {"TETHER_HOME": str(tmp_path / "home"), "TETHER_DATABASE_URL": settings.db_url,
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    entries = tmp_path / "payees.txt"
    entries.write_text("# who we pay\nDE89 3704 0044 0532 0130 00\n\nGB82WEST12345698765432\n")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tether.cli.main", "lists", *args],
                              env=env, capture_output=True, text=True, timeout=60)  # fmt: skip

    made = cli("set", "payees", "--file", str(entries), "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["size"] == 2
    assert cli("add", "payees", "FR1420041010050500013M02606").returncode == 0
    assert cli("remove", "payees", "GB82 WEST 1234 5698 7654 32").returncode == 0
    shown = json.loads(cli("show", "payees", "--json").stdout)
    assert shown["entries"] == ["DE89 3704 0044 0532 0130 00", "FR1420041010050500013M02606"]
    assert json.loads(cli("ls", "--json").stdout)["items"][0]["version"] == 3
    assert cli("delete", "payees").returncode == 0
    missing = cli("show", "payees")
    assert missing.returncode == 1 and "no list named 'payees'" in missing.stderr
