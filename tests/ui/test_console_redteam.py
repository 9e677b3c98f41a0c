"""The console's red-team pages, on SQLite and PostgreSQL: the list with each agent's age, and
a report with per-pack Wilson intervals, what stopped each attack, money contained against
attempted and the policy change that would stop the success."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.ui.redteam_seed import seed_report
from tests.ui.test_console import login
from tether.config import load_settings
from tether.server.app import create_app
from tether.store.keys import create_key


def test_red_team_list_and_report_pages(db: Engine, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    old = seed_report(db, agent="billing", now=now - timedelta(days=120))
    rid = seed_report(db, agent="support", now=now)
    secret = create_key(db, scopes="read", name="viewer")[1]
    settings = load_settings(home=tmp_path / "home", database_url=str(db.url))
    with TestClient(create_app(settings, engine=db), follow_redirects=False) as c:
        login(c, secret, "/redteam")
        listing = c.get("/redteam").text
        assert f'href="/redteam/{rid}"' in listing and f'href="/redteam/{old}"' in listing
        assert "120 d old" in listing  # billing's last red team is stale
        assert "indirect <strong>1</strong>/3" in listing
        page = c.get(f"/redteam/{rid}").text
        assert "Attack success per pack" in page
        # indirect: 1 of 3 got through, Wilson 95 % 6.2 %-79 %
        assert "<strong>33%</strong>" in page and "(6.2%\u201379%)" in page
        assert "payments.transfer[1]" in page and "approval: mail.send" in page
        assert "budget: run max_llm_calls" in page
        assert "$2,100.00" in page and "$1,200.00" in page and "$900.00" in page
        assert "data_flow: {argument_from: untrusted, arguments: [iban]" in page
        assert "errored" in page and "not shown safe" in page
        assert c.get("/redteam/rt_missing").status_code == 404
