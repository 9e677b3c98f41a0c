from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from tests.conftest import ServerProcess, free_port
from tests.store.test_runs import make_run
from tether.cli.main import app
from tether.core.records import RunAttribution
from tether.store import audit as audit_store
from tether.store.engine import make_engine
from tether.store.ingest import ensure_run
from tether.store.keys import create_key
from tether.store.migrate import upgrade


def _env(tmp_path: Path, db_url: str, **extra: str | None) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "TETHER_HOME": str(tmp_path / "home"), "TETHER_DATABASE_URL": db_url,
        "TETHER_URL": None, "TETHER_API_KEY": None, "COLUMNS": "250",
    }  # fmt: skip
    return {**env, **extra}


def test_list_and_show_from_the_local_store(tmp_path: Path, db: Engine, db_url: str) -> None:
    ok = make_run(db, 1, agent="triage", user="alice", cost=2_500_000)
    bad = make_run(db, 2, agent="writer", status="error")
    runner, env = CliRunner(), _env(tmp_path, db_url)
    res = runner.invoke(app, ["runs", "list"], env=env)
    assert res.exit_code == 0, res.output
    assert ok in res.stdout and bad in res.stdout and "$0.0025" in res.stdout
    assert res.stdout.index(bad) < res.stdout.index(ok)  # newest first
    page = json.loads(runner.invoke(app, ["runs", "list", "--agent", "triage", "--json"],
                                    env=env).stdout)  # fmt: skip
    assert [r["id"] for r in page["items"]] == [ok] and page["next_cursor"] is None
    failed = json.loads(runner.invoke(app, ["runs", "list", "--status", "failed", "--json"],
                                      env=env).stdout)  # fmt: skip
    assert [r["id"] for r in failed["items"]] == [bad]
    limited = runner.invoke(app, ["runs", "list", "--limit", "1"], env=env).stdout
    assert "more: --cursor" in limited
    show = runner.invoke(app, ["runs", "show", bad], env=env)
    assert show.exit_code == 0
    assert "writer" in show.stdout and "failed" in show.stdout and "boom" in show.stdout
    assert "chat" in show.stdout and "gpt-4o-mini" in show.stdout  # the LLM span in the tree
    detail = json.loads(runner.invoke(app, ["runs", "show", ok, "--json"], env=env).stdout)
    assert detail["id"] == ok and detail["spans"][0]["children"][0]["kind"] == "llm"


def test_errors_and_exit_codes(tmp_path: Path, db: Engine, db_url: str) -> None:
    runner, env = CliRunner(), _env(tmp_path, db_url)
    missing = runner.invoke(app, ["runs", "show", "run_nope"], env=env)
    assert missing.exit_code == 1 and "no run run_nope" in missing.stderr
    assert "Traceback" not in missing.output
    bad = runner.invoke(app, ["runs", "list", "--status", "done"], env=env)
    assert bad.exit_code == 2 and "status" in bad.stderr
    assert runner.invoke(app, ["runs", "list", "--limit", "0"], env=env).exit_code == 2


def test_missing_local_database_is_explained(tmp_path: Path) -> None:
    env = _env(tmp_path, f"sqlite:///{tmp_path / 'none' / 'tether.db'}")
    res = CliRunner().invoke(app, ["runs", "list"], env=env)
    assert res.exit_code == 1 and "no tether database" in res.stderr


def test_kill_on_the_local_store_without_tether_url(
    tmp_path: Path, db: Engine, db_url: str
) -> None:
    """No TETHER_URL: the kill is the store's (status, reason, audit entry), which every running
    server's kill switch picks up; a finished or unknown run is refused with one line."""
    now = datetime.now(UTC)
    with db.begin() as conn:
        ensure_run(conn, "run_loop", trace_id=None, attribution=RunAttribution(agent="a"),
                   started_at=now, source="gateway", now=now)  # fmt: skip
    runner, env = CliRunner(), _env(tmp_path, db_url)
    res = runner.invoke(app, ["runs", "kill", "run_loop", "--reason", "loop", "--json"], env=env)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"id": "run_loop", "status": "killed", "kill_reason": "loop"}
    shown = json.loads(runner.invoke(app, ["runs", "show", "run_loop", "--json"], env=env).stdout)
    assert (shown["status"], shown["kill_reason"]) == ("killed", "loop")
    [entry] = audit_store.list_entries(db, limit=5, action="run.killed")[0]
    assert entry.subject == "run_loop"
    again = runner.invoke(app, ["runs", "kill", "run_loop"], env=env)
    assert again.exit_code == 1 and "already ended" in again.stderr
    unknown = runner.invoke(app, ["runs", "kill", "run_nope"], env=env)
    assert unknown.exit_code == 1 and "run_nope" in unknown.stderr


def test_tether_url_wins_over_the_database_setting_and_the_flag_wins_over_it(
    tmp_path: Path, db: Engine, db_url: str
) -> None:
    rid = make_run(db, 1, agent="triage")
    runner = CliRunner()
    down = _env(tmp_path, db_url, TETHER_URL=f"http://127.0.0.1:{free_port()}",
                TETHER_API_KEY="k")  # fmt: skip
    res = runner.invoke(app, ["runs", "kill", "run_x", "--reason", "loop"], env=down)
    assert res.exit_code == 1 and "cannot reach tether" in res.stderr
    listed = runner.invoke(app, ["runs", "list", "--json", "--database-url", db_url], env=down)
    assert listed.exit_code == 0, listed.output
    assert [r["id"] for r in json.loads(listed.stdout)["items"]] == [rid]


def test_reads_and_kill_through_a_running_server(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'srv.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    rid = make_run(engine, 1, agent="triage")
    _, admin = create_key(engine, scopes="admin")
    _, ingest = create_key(engine, scopes="ingest")
    engine.dispose()
    server = ServerProcess(tmp_path / "home", db_url)
    try:
        runner = CliRunner()
        env = _env(tmp_path, "sqlite:///ignored.db", TETHER_URL=server.url, TETHER_API_KEY=admin)
        page = json.loads(runner.invoke(app, ["runs", "list", "--json"], env=env).stdout)
        assert [r["id"] for r in page["items"]] == [rid]
        shown = runner.invoke(app, ["runs", "show", rid], env=env)
        assert shown.exit_code == 0 and "triage" in shown.stdout
        denied = runner.invoke(app, ["runs", "list"], env={**env, "TETHER_API_KEY": ingest})
        assert denied.exit_code == 1 and "scope" in denied.stderr
        unknown = runner.invoke(app, ["runs", "show", "run_nope"], env=env)
        assert unknown.exit_code == 1 and "no run run_nope" in unknown.stderr
        paths = httpx.get(server.url + "/api/v1/openapi.json").json()["paths"]
        if "/api/v1/runs/{run_id}/kill" not in paths:
            pytest.skip("POST /api/v1/runs/{id}/kill (gateway area) is not installed yet")
        created = httpx.post(server.url + "/api/v1/runs", json={"agent": "triage"},
                             headers={"Authorization": f"Bearer {admin}"}).json()  # fmt: skip
        res = runner.invoke(app, ["runs", "kill", created["id"], "--reason", "loop"], env=env)
        assert res.exit_code == 0, res.output
        after = json.loads(runner.invoke(app, ["runs", "show", created["id"], "--json"],
                                         env=env).stdout)  # fmt: skip
        assert after["status"] == "killed" and after["kill_reason"] == "loop"
    finally:
        server.stop()
