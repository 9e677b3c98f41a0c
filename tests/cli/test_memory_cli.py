"""`tether memory` and `tether runs replay` on the local store (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import Engine
from typer.testing import CliRunner

from tests.store.test_episodes import _run
from tether.cli.main import app
from tether.core.memory import Access
from tether.store import memory as store

NOW = datetime.now(UTC)


def test_memory_commands_on_the_local_store(db: Engine, db_url: str) -> None:
    store.write(db, Access("support", "support"), namespace=None, text="gina likes mornings",
                embedding=[1.0, 0.0], now=NOW, actor="t", run_id="run_cli_mem_1")  # fmt: skip
    runner = CliRunner()
    env = {"TETHER_URL": ""}
    out = runner.invoke(app, ["memory", "namespaces", "--database-url", db_url, "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["items"][0]["name"] == "support"
    listed = runner.invoke(app, ["memory", "list", "support", "--database-url", db_url], env=env)
    assert listed.exit_code == 0 and "gina" in listed.output and "mornings" in listed.output
    search = runner.invoke(app, ["memory", "search", "gina", "--database-url", db_url], env=env)
    assert search.exit_code == 2 and "TETHER_URL" in search.output
    gone = runner.invoke(app, ["memory", "forget", "--run", "run_cli_mem_1", "--database-url",
                               db_url, "--json"], env=env)  # fmt: skip
    assert gone.exit_code == 0 and len(json.loads(gone.output)["forgotten"]) == 1
    bad = runner.invoke(app, ["memory", "forget", "--database-url", db_url], env=env)
    assert bad.exit_code == 2 and "exactly one" in bad.output


def test_runs_replay_prints_the_recorded_steps(db: Engine, db_url: str) -> None:
    _run(db, "run_cli_replay", "support", "refund acme", tools=("crm.lookup", "pay.refund"))
    runner = CliRunner()
    env = {"TETHER_URL": ""}
    out = runner.invoke(app, ["runs", "replay", "run_cli_replay", "--database-url", db_url],
                        env=env)  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "crm.lookup" in out.output and "pay.refund" in out.output
    model = runner.invoke(app, ["runs", "replay", "run_cli_replay", "--model", "m",
                                "--database-url", db_url], env=env)  # fmt: skip
    assert model.exit_code == 2 and "TETHER_URL" in model.output
    missing = runner.invoke(app, ["runs", "replay", "run_nope", "--database-url", db_url], env=env)
    assert missing.exit_code == 1 and "no run run_nope" in missing.output
