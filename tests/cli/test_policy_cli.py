"""`tether policy` and `tether audit`: file-and-line errors, apply/show on the local store and
through a running server, audit verify catching a tampered row, JSONL export."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine, update
from typer.testing import CliRunner

from tests.conftest import ServerProcess
from tether.cli.main import app
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade
from tether.store.tables import audit_log

GOOD = """\
agent: triage
tools:
  - {match: "erp.delete_*", allow: false}
  - {match: "erp.*"}
  - {match: "mail.send", approval: required, rate_limit: "10/hour"}
"""
BAD = """\
agent: triage
tools:
  - {match: "erp.*"}
  - {match: "mail.send", aproval: required}
budgets:
  run: {max_cost_usd: -2}
"""


def _env(tmp_path: Path, db_url: str, **extra: str | None) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "TETHER_HOME": str(tmp_path / "home"),
        "TETHER_DATABASE_URL": db_url,
        "TETHER_URL": None,
        "TETHER_API_KEY": None,
        "COLUMNS": "250",
    }
    return {**env, **extra}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_check_names_file_line_and_fix(tmp_path: Path) -> None:
    good, bad = write(tmp_path, "good.yaml", GOOD), write(tmp_path, "bad.yaml", BAD)
    runner = CliRunner()
    res = runner.invoke(app, ["policy", "check", str(good)])
    assert res.exit_code == 0 and f"{good}: ok (agent triage, 3 tool rules)" in res.stdout
    res = runner.invoke(app, ["policy", "check", str(good), str(bad)])
    assert res.exit_code == 2
    assert res.stderr.splitlines() == [
        f"{bad}:4: tools[1].aproval: unknown key `aproval`. Fix: did you mean `approval`?",
        f"{bad}:6: budgets.run.max_cost_usd: input should be greater than or equal to 0. "
        "Fix: use 0 or a positive number, or remove the key for no limit",
    ]
    assert "Traceback" not in res.output
    missing = runner.invoke(app, ["policy", "check", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    shadow = write(tmp_path, "shadow.yaml", "agent: a\ntools:\n  - {match: '*'}\n  - {match: x}\n")
    res = runner.invoke(app, ["policy", "check", str(shadow)])
    # a rule that can never fire is an error, not a warning: it would silently disable a defence
    assert res.exit_code == 2 and f"{shadow}:4: tools[1]: rule" in res.stderr


def test_apply_show_history_diff_local(tmp_path: Path, db: Engine, db_url: str) -> None:
    runner, env = CliRunner(), _env(tmp_path, db_url)
    path = write(tmp_path, "triage.yaml", GOOD)
    res = runner.invoke(app, ["policy", "apply", str(path)], env=env)
    assert res.exit_code == 0 and "applied policy for triage: version 1" in res.stdout
    res = runner.invoke(app, ["policy", "apply", str(path)], env=env)
    assert "unchanged at version 1" in res.stdout
    path.write_text(GOOD + "on_uncertain: deny\n")
    res = runner.invoke(app, ["policy", "apply", str(path), "--json"], env=env)
    assert json.loads(res.stdout) == {"agent": "triage", "version": 2, "changed": True}
    bad = write(tmp_path, "bad.yaml", BAD)
    res = runner.invoke(app, ["policy", "apply", str(bad)], env=env)
    assert res.exit_code == 2 and f"{bad}:4: tools[1].aproval" in res.stderr

    shown = runner.invoke(app, ["policy", "show", "triage"], env=env)
    assert shown.exit_code == 0 and "version 2" in shown.stdout and "on_uncertain" in shown.stdout
    v1 = json.loads(runner.invoke(app, ["policy", "show", "triage", "--version", "1", "--json"],
                                  env=env).stdout)  # fmt: skip
    assert v1["version"] == 1 and v1["source"] == GOOD and v1["applied_by"].startswith("cli:")
    hist = json.loads(runner.invoke(app, ["policy", "show", "triage", "--history", "--json"],
                                    env=env).stdout)  # fmt: skip
    assert [v["version"] for v in hist["items"]] == [2, 1]
    diff = runner.invoke(app, ["policy", "show", "triage", "--diff", "1..2"], env=env)
    assert "+on_uncertain: deny" in diff.stdout
    res = runner.invoke(app, ["policy", "show", "triage", "--diff", "1-2"], env=env)
    assert res.exit_code == 2 and "A..B" in res.stderr
    res = runner.invoke(app, ["policy", "show", "nobody"], env=env)
    assert res.exit_code == 1 and "agent nobody has no policy; apply one" in res.stderr
    listed = json.loads(runner.invoke(app, ["policy", "list", "--json"], env=env).stdout)
    assert [(p["agent"], p["version"]) for p in listed["items"]] == [("triage", 2)]


def test_audit_verify_export_list_and_tamper(tmp_path: Path, db: Engine, db_url: str) -> None:
    runner, env = CliRunner(), _env(tmp_path, db_url)
    path = write(tmp_path, "triage.yaml", GOOD)
    runner.invoke(app, ["policy", "apply", str(path)], env=env)
    path.write_text(GOOD + "owner: finance\n")
    runner.invoke(app, ["policy", "apply", str(path)], env=env)
    res = runner.invoke(app, ["audit", "verify"], env=env)
    assert res.exit_code == 0 and "intact: 2 entries" in res.stdout
    out = tmp_path / "audit.jsonl"
    res = runner.invoke(app, ["audit", "export", "--output", str(out)], env=env)
    assert res.exit_code == 0 and "wrote 2 entries" in res.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["action"] for r in rows] == ["policy.applied", "policy.applied"]
    assert rows[1]["prev_hash"] == rows[0]["hash"]
    stdout_rows = runner.invoke(app, ["audit", "export"], env=env).stdout.splitlines()
    assert [json.loads(x) for x in stdout_rows] == rows
    listed = json.loads(runner.invoke(app, ["audit", "list", "--json"], env=env).stdout)
    assert [e["seq"] for e in listed["items"]] == [rows[1]["seq"], rows[0]["seq"]]
    table = runner.invoke(app, ["audit", "list", "--action", "policy.applied"], env=env)
    assert table.exit_code == 0 and "policy.applied" in table.stdout

    with db.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == rows[0]["seq"])
                     .values(subject="someone-else"))  # fmt: skip
    res = runner.invoke(app, ["audit", "verify"], env=env)
    assert res.exit_code == 1
    assert f"TAMPERED at entry seq {rows[0]['seq']}" in res.stderr
    assert '"subject": "someone-else"' in res.stderr
    report = json.loads(runner.invoke(app, ["audit", "verify", "--json"], env=env).stdout)
    assert report["first_bad_seq"] == rows[0]["seq"] and not report["ok"]


def test_apply_show_and_verify_through_the_server(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'server.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    _, admin = create_key(engine, scopes="admin")
    _, reader = create_key(engine, scopes="read")
    engine.dispose()
    server = ServerProcess(tmp_path / "home", db_url)
    try:
        runner = CliRunner()
        env = _env(tmp_path, "sqlite:////nonexistent/never-used.db", TETHER_URL=server.url,
                   TETHER_API_KEY=admin)  # fmt: skip
        path = write(tmp_path, "triage.yaml", GOOD)
        res = runner.invoke(app, ["policy", "apply", str(path)], env=env)
        assert res.exit_code == 0, res.output
        assert "applied policy for triage: version 1" in res.stdout
        got = json.loads(runner.invoke(app, ["policy", "show", "triage", "--json"], env=env).stdout)
        assert got["source"] == GOOD and got["applied_by"].startswith("key:")
        res = runner.invoke(app, ["audit", "verify"], env=env)
        lines = runner.invoke(app, ["audit", "export"], env=env).stdout.splitlines()
        # the server registers its built-in memory.* tools at start (audited) before the apply
        assert res.exit_code == 0 and f"intact: {len(lines)} entries" in res.stdout
        actions = [json.loads(line)["action"] for line in lines]
        assert actions[-1] == "policy.applied" and actions.count("policy.applied") == 1
        read_env = {**env, "TETHER_API_KEY": reader}
        res = runner.invoke(app, ["policy", "apply", str(path)], env=read_env)
        assert res.exit_code == 1 and "admin" in res.stderr
        down = {**env, "TETHER_URL": "http://127.0.0.1:9"}
        res = runner.invoke(app, ["audit", "export"], env=down)
        assert res.exit_code == 1 and "cannot reach tether" in res.stderr
    finally:
        server.stop()
