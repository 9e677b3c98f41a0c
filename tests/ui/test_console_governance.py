"""The console shows a run's taint and value provenance, and a hold's value and scope choice;
approving from the approvals page with a scope makes the grant (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.ui.test_console import csrf_of, login
from tether.config import load_settings
from tether.core.provenance import atoms_of
from tether.core.records import RunAttribution
from tether.server.app import create_app
from tether.store import approvals, grants, provenance
from tether.store import tools as registry
from tether.store.keys import create_key
from tether.store.runs import create_run

FINDING = {"argument": "to", "value": "eve@evil.example", "kind": "email",
           "source": "mail.read_inbox"}  # fmt: skip


@pytest.fixture
def client(db: Engine, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    settings = load_settings(home=tmp_path / "home", database_url=str(db.url))
    secret = create_key(db, scopes="admin", name="admin")[1]
    with TestClient(create_app(settings, engine=db), follow_redirects=False) as c:
        yield c, secret


def test_run_page_and_approval_page_show_provenance(
    client: tuple[TestClient, str], db: Engine
) -> None:
    c, secret = client
    now = datetime.now(UTC)
    create_run(db, run_id="run_cg1", attribution=RunAttribution(agent="support"),
               input="write to ada@example.com", now=now)  # fmt: skip
    with db.begin() as conn:
        provenance.record(conn, "run_cg1", atoms_of("mail from eve@evil.example"),
                          trusted=False, source="mail.read_inbox", now=now)  # fmt: skip
        registry.add_run_tags(conn, "run_cg1", ["untrusted"], now=now)
    args = {"to": "eve@evil.example"}
    held = approvals.create(db, tool="mail.send", arguments=args, run_id="run_cg1",
                            agent="support", rule="data_flow[0]", reason="r", timeout_s=600,
                            now=now, finding=FINDING, args_hash=grants.args_hash(args))  # fmt: skip
    login(c, secret, "/runs/run_cg1")
    page = c.get("/runs/run_cg1").text
    assert "Taint and provenance" in page and "eve@evil.example" in page
    assert "<code>untrusted</code>" in page
    listing = c.get("/approvals").text
    assert "Held value:" in listing and "mail.read_inbox" in listing
    assert 'value="counterparty"' in listing
    r = c.post(f"/approvals/{held.id}/decide", data={"decision": "approve", "scope":
               "counterparty", "reason": "known", "csrf": csrf_of(listing)},
               headers={"hx-request": "true"})  # fmt: skip
    assert r.status_code == 200, r.text
    [grant] = grants.list_grants(db, agent="support")
    assert grant.scope == "counterparty" and grant.value == "eve@evil.example"


def test_home_flags_a_stale_red_team_and_metrics_export_its_age(
    client: tuple[TestClient, str], db: Engine
) -> None:
    from datetime import timedelta

    from tether.store import redteam

    c, secret = client
    now = datetime.now(UTC)
    for agent in ("support", "billing", "fresh"):
        create_run(db, run_id=f"run_rt_{agent}", attribution=RunAttribution(agent=agent),
                   input=None, now=now)  # fmt: skip
    report = {"agent": "support", "attempts": 3, "packs": {}, "successes": []}
    redteam.save(db, report, actor="test", now=now - timedelta(days=100))
    redteam.save(db, {**report, "agent": "fresh"}, actor="test", now=now - timedelta(days=3))
    login(c, secret, "/")
    home = c.get("/").text
    assert "red team 100 d old" in home
    assert home.count("no red team") == 1  # billing was never red-teamed; fresh is recent
    metrics = c.get("/metrics", headers={"Authorization": f"Bearer {secret}"}).text
    line = next(x for x in metrics.splitlines()
                if x.startswith('tether_redteam_age_seconds{agent="support"}'))  # fmt: skip
    assert 100 * 86400 - 60 <= float(line.split()[-1]) <= 100 * 86400 + 600


def test_keys_page_shows_age_expiry_and_rotation_status(db: Engine, tmp_path: Path) -> None:
    from datetime import timedelta

    from tether.store.keys import rotate_key

    settings = load_settings(home=tmp_path / "home", database_url=str(db.url))
    settings = settings.model_copy(update={"keys": settings.keys.model_copy(
        update={"max_age_days": 90})})  # fmt: skip
    now = datetime.now(UTC)
    admin = create_key(db, scopes="admin", name="admin")[1]
    reader = create_key(db, scopes="read", name="viewer")[1]
    create_key(db, scopes="read", name="aging", now=now - timedelta(days=85))
    create_key(db, scopes="read", name="ancient", now=now - timedelta(days=120))
    old, _ = create_key(db, scopes="ingest", name="exporter")
    rotate_key(db, old.id, overlap=timedelta(hours=1))
    with TestClient(create_app(settings, engine=db), follow_redirects=False) as c:
        login(c, admin, "/keys")
        page = c.get("/keys")
        assert page.status_code == 200
        for shown in (
            "aging",
            "ancient",
            "exporter",
            "rotate soon",
            "too old",
            "rotating",
            "85 d",
            "120 d",
            "rotation required every 90 days",
            "replaced by",
        ):
            assert shown in page.text, shown
    with TestClient(create_app(settings, engine=db), follow_redirects=False) as c:
        login(c, reader, "/")
        assert c.get("/keys").status_code == 403
    # a key past the rotation policy cannot open the console
    stale = create_key(db, scopes="admin", name="stale", now=now - timedelta(days=91))[1]
    with TestClient(create_app(settings, engine=db), follow_redirects=False) as c:
        form = c.get("/login")
        resp = c.post("/login", data={"api_key": stale, "csrf": csrf_of(form.text), "next": "/"})
        assert resp.status_code == 401 and "keys.max_age_days" in resp.text
