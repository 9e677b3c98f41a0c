"""The demo's red team against a real `tether serve`: the support agent's report is stored on
the demo's tether, most attacks stopped by its policy, one let through by the missing amount
bound, with that rule suggested."""

from __future__ import annotations

import random
from pathlib import Path

import httpx

from tests.conftest import ServerProcess
from tether.demo.redteam import scenario_redteam
from tether.demo.scenarios import Demo
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade


def test_the_demo_red_team_stores_a_report_with_one_success_and_its_rule(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'tether.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    _, admin = create_key(engine, scopes="admin", name="demo")
    engine.dispose()
    server = ServerProcess(tmp_path / "home", db_url)
    try:
        demo = Demo(url=server.url, admin_key=admin, rng=random.Random(5))
        scenario_redteam(demo)
        auth = {"Authorization": f"Bearer {admin}"}
        items = httpx.get(f"{server.url}/api/v1/redteam/reports", headers=auth).json()["items"]
        [item] = items
        full = httpx.get(f"{server.url}/api/v1/redteam/reports/{item['id']}", headers=auth).json()
    finally:
        server.stop()
    [note] = demo.notes
    assert note.startswith(f"red team {item['id']}: ") and "1 got through" in note
    report = full["report"]
    assert item["agent"] == "support"
    stopped = sum(p["outcomes"].get("stopped", 0) for p in report["packs"].values())
    assert stopped >= 8
    [success] = report["successes"]
    assert success["tool"] == "pay.transfer"
    assert "when: {amount: {max:" in success["suggested_change"]
    assert report["cost"]["contained_usd"] > 0 and report["cost"]["moved_usd"] == 5000
