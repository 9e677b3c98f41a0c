from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tether.cli.main import app
from tether.store.engine import make_engine
from tether.store.keys import find_by_secret


def _env(tmp_path: Path, db_url: str) -> dict[str, str | None]:
    return {"TETHER_HOME": str(tmp_path / "home"), "TETHER_DATABASE_URL": db_url,
            "TETHER_URL": None, "TETHER_API_KEY": None, "COLUMNS": "200"}  # fmt: skip


def test_create_list_revoke(tmp_path: Path, db_url: str) -> None:
    runner, env = CliRunner(), _env(tmp_path, db_url)
    res = runner.invoke(app, ["keys", "create", "--scopes", "agent,ingest", "--agent", "triage",
                              "--name", "bot", "--json"], env=env)  # fmt: skip
    assert res.exit_code == 0, res.output
    created = json.loads(res.stdout)
    assert set(created) == {"id", "key"} and created["key"].startswith("tth_")
    engine = make_engine(db_url)
    try:
        key = find_by_secret(engine, created["key"])
        assert key is not None and key.agent == "triage" and key.scopes == ("agent", "ingest")
        listed = json.loads(runner.invoke(app, ["keys", "list", "--json"], env=env).stdout)
        assert [k["id"] for k in listed["items"]] == [created["id"]]
        assert created["key"] not in json.dumps(listed)
        table = runner.invoke(app, ["keys", "list"], env=env).stdout
        assert created["id"] in table and "bot" in table
        res = runner.invoke(app, ["keys", "revoke", created["id"]], env=env)
        assert res.exit_code == 0 and f"revoked {created['id']}" in res.stdout
        assert find_by_secret(engine, created["key"]) is None
        assert json.loads(runner.invoke(app, ["keys", "list", "--json"], env=env).stdout) == {
            "items": [],
            "next_cursor": None,
        }
    finally:
        engine.dispose()


def test_human_output_warns_the_secret_is_shown_once(tmp_path: Path) -> None:
    env = _env(tmp_path, f"sqlite:///{tmp_path / 't.db'}")
    res = CliRunner().invoke(app, ["keys", "create", "--scopes", "admin"], env=env)
    assert res.exit_code == 0 and "tth_" in res.stdout and "not shown again" in res.stdout


def test_errors_are_one_line_with_exit_codes(tmp_path: Path) -> None:
    runner, env = CliRunner(), _env(tmp_path, f"sqlite:///{tmp_path / 't.db'}")
    bad = runner.invoke(app, ["keys", "create", "--scopes", "root"], env=env)
    assert bad.exit_code == 2 and "unknown scope" in bad.stderr and "Traceback" not in bad.output
    no_agent = runner.invoke(app, ["keys", "create", "--scopes", "agent"], env=env)
    assert no_agent.exit_code == 2 and "--agent" in no_agent.stderr
    missing = runner.invoke(app, ["keys", "revoke", "key_doesnotexist00"], env=env)
    assert missing.exit_code == 1 and "no live API key" in missing.stderr
    usage = runner.invoke(app, ["keys", "create"], env=env)
    assert usage.exit_code == 2


def test_import_a_secret_from_a_file_once(tmp_path: Path) -> None:
    """The Helm chart's migration Job imports the admin key from a mounted Secret, every
    upgrade: the first run stores it, later runs change nothing, a short secret is refused."""
    env = {"TETHER_HOME": str(tmp_path / "home"), "TETHER_URL": None,
           "TETHER_DATABASE_URL": f"sqlite:///{tmp_path / 'k.db'}"}  # fmt: skip
    secret = tmp_path / "admin-key"
    secret.write_text("tth_" + "x" * 40 + "\n")
    args = ["keys", "create", "--scopes", "admin", "--name", "bootstrap", "--secret-file",
            str(secret)]  # fmt: skip
    first = CliRunner().invoke(app, args, env=env)
    assert first.exit_code == 0 and "imported key_" in first.output
    again = CliRunner().invoke(app, args, env=env)
    assert again.exit_code == 0 and "nothing to do" in again.output
    listed = CliRunner().invoke(app, ["keys", "list", "--json"], env=env)
    assert [k["name"] for k in json.loads(listed.output)["items"]] == ["bootstrap"]
    secret.write_text("short")
    bad = CliRunner().invoke(app, args, env=env)
    assert bad.exit_code == 2 and "at least 32 characters" in " ".join(bad.output.split())


def test_create_with_a_lifetime_rotate_with_an_overlap_and_list_ages(
    tmp_path: Path, db_url: str
) -> None:
    runner, env = CliRunner(), _env(tmp_path, db_url)
    res = runner.invoke(app, ["keys", "create", "--scopes", "read", "--name", "grafana",
                              "--expires-in", "30d", "--json"], env=env)  # fmt: skip
    assert res.exit_code == 0, res.output
    made = json.loads(res.stdout)
    res = runner.invoke(app, ["keys", "rotate", made["id"], "--overlap", "1h", "--json"], env=env)
    assert res.exit_code == 0, res.output
    rotated = json.loads(res.stdout)
    assert rotated["id"] != made["id"] and rotated["key"].startswith("tth_")
    assert rotated["old"]["replaced_by"] == rotated["id"] and rotated["old"]["expires_at"]
    listed = {k["id"]: k for k in json.loads(
        runner.invoke(app, ["keys", "list", "--json"], env=env).stdout)["items"]}  # fmt: skip
    assert listed[made["id"]]["status"] == "rotating"
    assert listed[rotated["id"]]["status"] == "ok" and listed[rotated["id"]]["age_s"] >= 0
    table = runner.invoke(app, ["keys", "list"], env=env).stdout
    assert "rotating out" in table and "age" in table
    again = runner.invoke(app, ["keys", "rotate", made["id"]], env=env)
    assert again.exit_code != 0 and "already rotated" in again.output
    bad = runner.invoke(app, ["keys", "rotate", rotated["id"], "--overlap", "soon"], env=env)
    assert bad.exit_code != 0 and "--overlap" in bad.output
