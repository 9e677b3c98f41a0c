"""The demo's watch scenario against a real `tether serve`: history through OTLP, the passes
run through the API, a drifting helpdesk v2 and dana's cost spike reported."""

from __future__ import annotations

import random
from pathlib import Path

from tests.conftest import ServerProcess
from tether.demo.scenarios import Demo
from tether.demo.watch import scenario_watch
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade


def test_the_watch_scenario_flags_drift_and_a_cost_spike(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'tether.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    _, admin = create_key(engine, scopes="admin", name="demo")
    engine.dispose()
    server = ServerProcess(tmp_path / "home", db_url)
    try:
        demo = Demo(url=server.url, admin_key=admin, rng=random.Random(5))
        scenario_watch(demo)
    finally:
        server.stop()
    drift, cost = demo.notes
    assert drift.startswith("drift: helpdesk drifted") and "sequences" in drift
    assert "new sequence" in drift
    assert cost.startswith("cost alert alrt_") and "user dana spent" in cost
