"""Every panel query of the shipped Grafana dashboards, run through a real Prometheus that
scrapes a real `tether serve` under demo-like traffic, returns data and no error."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.llm_env import LLMEnv, start_env, stop_env
from tests.ops import traffic
from tests.ops.prometheus import Prometheus

DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "grafana").glob("*.json"))


def panel_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                out.append((f"{path.stem}: {panel['title']} [{target['refId']}]", target["expr"]))
    return out


@pytest.fixture
def env(tmp_path: Path) -> Iterator[LLMEnv]:
    env = start_env(tmp_path, f"sqlite:///{tmp_path / 'tether.db'}",
                    env={"TETHER_METRICS_CACHE_S": "0"})  # fmt: skip
    traffic.prepare(env)
    yield env
    stop_env(env)


def test_every_panel_query_returns_data(env: LLMEnv, tmp_path: Path) -> None:
    queries = panel_queries()
    assert len(queries) >= 20
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    prom = Prometheus(prom_dir, [env.server.url.removeprefix("http://")], env.admin)
    try:
        traffic.wave(env)
        prom.wait_for("tether_ledger_exporter == 1", timeout=30)
        # rates need two samples: wait until the first wave has been scraped a few times
        prom.wait_for("count_over_time(tether_cost_usd_total[1m]) >= 3", timeout=30)
        traffic.wave(env)
        missing: dict[str, str] = {}
        deadline = time.monotonic() + 45
        pending = dict(queries)
        while pending and time.monotonic() < deadline:
            for name, expr in list(pending.items()):
                body = prom.query(expr)
                assert body["status"] == "success", f"{name}: {expr}: {body}"
                if body["data"]["result"]:
                    del pending[name]
            if pending:
                time.sleep(1)
        missing = pending
        assert not missing, f"panels without data: {json.dumps(missing, indent=1)}"
    finally:
        prom.stop()
