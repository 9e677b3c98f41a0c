"""`tether runs checkpoints RUN` and `tether runs resume RUN` against a running tether and on the
local store (SQLite and PostgreSQL): the timeline as a table and as JSON, bad input as one line
with exit 2, and a resume request the agent's `resume_requested` takes with its state update."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from typer.testing import CliRunner

from tests.integrations.conftest import Tether
from tests.integrations.test_langgraph_saver import counting_graph
from tether.cli.main import app
from tether.integrations.langgraph import TetherSaver, resume_requested


def _env(api: Tether, tmp_path: Path, remote: bool) -> dict[str, str | None]:
    return {"TETHER_HOME": str(tmp_path / "home"), "TETHER_DATABASE_URL": api.db_url,
            "TETHER_URL": api.url if remote else None,
            "TETHER_API_KEY": api.admin_key if remote else None, "COLUMNS": "250"}  # fmt: skip


def test_checkpoints_and_resume_from_the_cli(tether_api: Tether, tmp_path: Path) -> None:
    saver = TetherSaver(tether_api.url, api_key=tether_api.agent_key)
    graph = counting_graph(saver, rounds=2)
    config = {"configurable": {"thread_id": f"cli-{uuid.uuid4().hex[:8]}"}}
    graph.invoke({"log": [], "count": 0}, config)
    run_id = saver.run_id(config)
    runner = CliRunner()

    remote = runner.invoke(app, ["runs", "checkpoints", run_id, "--json"],
                           env=_env(tether_api, tmp_path, True))  # fmt: skip
    assert remote.exit_code == 0, remote.output
    items = json.loads(remote.stdout)["items"]
    assert [c["step"] for c in items] == [-1, 0, 1, 2, 3]
    local = runner.invoke(app, ["runs", "checkpoints", run_id, "--json"],
                          env=_env(tether_api, tmp_path, False))  # fmt: skip
    assert local.exit_code == 0, local.output
    assert json.loads(local.stdout)["items"] == items
    table = runner.invoke(
        app, ["runs", "checkpoints", run_id], env=_env(tether_api, tmp_path, True)
    )
    assert (
        "plan" in table.stdout
        and "~count=2" in table.stdout
        and items[-1]["checkpoint_id"] in table.stdout
    )

    env = _env(tether_api, tmp_path, True)
    bad = runner.invoke(app, ["runs", "resume", run_id, "--update", "{count: 1"], env=env)
    assert bad.exit_code == 2 and "--update: not JSON" in bad.output
    missing = runner.invoke(app, ["runs", "resume", run_id, "--checkpoint", "nope"], env=env)
    assert missing.exit_code == 1 and "has no checkpoint 'nope'" in missing.output

    # resume from the step-1 checkpoint (after `plan`) with the count set to 1: one more `work`
    step1 = next(c["checkpoint_id"] for c in items if c["step"] == 1)
    ok = runner.invoke(app, ["runs", "resume", run_id, "--checkpoint", step1,
                             "--update", '{"count": 1}', "--json"], env=env)  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["status"] == "pending"
    outcomes = resume_requested(graph, thread_id=config["configurable"]["thread_id"], wait_s=0)
    assert [o.status for o in outcomes] == ["done"]
    assert outcomes[0].result["count"] == 2 and outcomes[0].result["log"] == ["plan", "work 2"]
    assert resume_requested(graph, wait_s=0) == []  # taken once
