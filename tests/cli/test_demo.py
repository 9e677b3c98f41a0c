"""`tether demo --no-serve` and `--seed-only` produce the demo's runs: three agents, a failed run,
a tool error, a budget-killed run, a run held for approval and an OTLP-only agent."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, free_port
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade


def _tether(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return {
        **env,
        "TETHER_HOME": str(home),
        "TETHER_LOG_LEVEL": "warning",
        "COLUMNS": "200",
        **extra,
    }


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.slow
def test_demo_no_serve_writes_the_demo_runs_on_a_fresh_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = str(free_port())
    home.mkdir()
    with sqlite3.connect(home / "demo.db") as conn:  # a previous demo's database: wiped
        conn.execute("CREATE TABLE leftover (x INTEGER)")
    # generous: with .venv-agents the tour also runs the CrewAI and AutoGen examples there
    first = _tether("demo", "--no-serve", "--pace", "0", "--port", port, env=_env(home),
                    timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert f"console: http://127.0.0.1:{port}/" in out
    assert "killed by its run budget: allowed $0.25, spent $" in out
    assert "refused call" in out and "needed (worst case)" in out
    assert "waits for approval apr_" in out
    # the framework examples ran in it, each with its held email approved
    examples = ["invoice-triage", "openai-agents", "plain-loop"]
    if (Path(__file__).parents[2] / ".venv-agents" / "bin" / "python").is_file():
        examples += ["crewai-crew", "autogen"]  # from the agent's venv (`make agents-venv`)
    for example in examples:
        assert f"examples: {example} (" in out and "1 held email approved" in out, out
    assert "examples: " in out and " failed:" not in out
    assert f"export TETHER_URL=http://127.0.0.1:{port} TETHER_API_KEY=tth_" in out
    db = home / "demo.db"
    runs = _rows(db, "SELECT agent, version, status, error, cost_nusd, kill_reason FROM runs")
    agents = {r[0] for r in runs}
    assert {"triage", "research", "coding", "support", "support-bot"} <= agents
    assert {r[1] for r in runs if r[0] == "triage"} == {"v1", "v2"}
    assert any(r[2] == "failed" and "no customer with email" in str(r[3]) for r in runs)
    killed = [r for r in runs if r[2] == "killed"]
    assert len(killed) == 1 and killed[0][0] == "coding" and "run budget" in str(killed[0][5])
    # the truth: the budget was not spent, the next call's worst case did not fit what was left
    assert re.search(r"worst case \$\d+\.\d{4} did not fit in the \$\d+\.\d{4} left of the "
                     r"\$0\.25 run budget", str(killed[0][5])), killed[0][5]  # fmt: skip
    assert killed[0][4] <= 250_000_000  # never more than the $0.25 cap, in nano-dollars
    assert [r[0] for r in runs if r[2] == "awaiting_approval"] == ["support"]
    assert len({r[4] for r in runs if r[4]}) > 3  # different models, different costs
    tool_errors = _rows(
        db, "SELECT name, error FROM spans WHERE kind = 'tool' AND status = 'error'"
    )
    assert (
        "crm.lookup_customer",
        "DemoToolError: no customer with email dave@unknown.example",
    ) in tool_errors
    assert any(name == "web.fetch" and "404 Not Found" in err for name, err in tool_errors)
    users = {r[0] for r in _rows(db, 'SELECT DISTINCT "user" FROM runs')}
    assert {"alice", "bob", "carol", "dana", "erin"} <= users
    assert _rows(db, "SELECT COUNT(*) FROM feedback")[0][0] >= 2
    assert _rows(db, "SELECT COUNT(*) FROM scores")[0][0] == 3

    assert _rows(db, "SELECT name FROM sqlite_master WHERE name = 'leftover'") == []
    # shipping: 20 tasks x 2 attempts per version, v2 gated in, v3 out, two canaries decided
    assert "gate refunds v2: pass" in out and "canary v2 vs v1: promoted" in out
    assert "gate refunds v3 against v2: fail; regression: assertion 'quotes the refund" in out
    assert "canary v4 vs v2: rolled_back - guardrail" in out
    assert _rows(
        db,
        "SELECT version, COUNT(*) FROM eval_attempts JOIN evals ON evals.id = "
        "eval_attempts.eval_id GROUP BY version ORDER BY version",
    ) == [("v2", 40), ("v3", 40)]
    assert _rows(db, "SELECT outcome FROM gate_verdicts ORDER BY created_at") == [
        ("pass",),
        ("fail",),
    ]
    assert _rows(db, "SELECT candidate, status FROM rollouts ORDER BY started_at") == [
        ("v2", "promoted"),
        ("v4", "rolled_back"),
    ]
    # the MCP part: provenance holds the page's recipient, not the task's; a scoped approval
    assert "mcp: demo.delete_record refused: tether denied" in out
    assert "email to attacker@evil.example held" in out and "not held" in out
    assert "appeared only in untrusted content" in out
    assert "not asked twice" in out
    assert "demo.fetch_page (ingress, read, untrusted; annotations: read-only, open world)" in out
    # the rug pull: a description changed on the live server is refused until re-approved
    assert "mcp: rug pull: demo.fetch_page's description changed upstream" in out
    assert "mcp: refused: tether denied demo.fetch_page: the description or input schema" in out
    assert "mcp: demo.fetch_page re-approved after review" in out and "the same call: ok" in out
    audit = [
        r[0]
        for r in _rows(
            db,
            "SELECT action FROM audit_log WHERE subject = "
            "'demo.fetch_page' AND action LIKE 'tool.%' ORDER BY seq",
        )
    ]
    assert audit == ["tool.pinned", "tool.changed", "tool.approved"], audit
    assert _rows(db, "SELECT scope FROM approval_grants") == [("run",)]
    # watch and attack: a drifting version, a cost spike alerted, a red team with one success
    assert "drift: helpdesk drifted" in out and "cost alert alrt_" in out
    assert re.search(r"red team rt_\w+: \d+ attacks on support, \d+ stopped by its policy, "
                     r"1 got through \(injection-2: pay.transfer\)", out), out  # fmt: skip
    assert "when: {amount: {max:" in out
    assert _rows(db, "SELECT agent FROM redteam_reports") == [("support",)]
    assert ("attacker@evil.example", 0, 1) in _rows(
        db, "SELECT value, trusted, untrusted FROM run_values WHERE kind = 'email'"
    )


@pytest.mark.slow
def test_seed_only_sends_to_a_running_tether(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'tether.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    _, admin_secret = create_key(engine, scopes="admin", name="test")
    engine.dispose()
    server = ServerProcess(tmp_path / "srv", db_url)
    try:
        env = _env(tmp_path / "client", TETHER_URL=server.url, TETHER_API_KEY=admin_secret)
        done = _tether("demo", "--seed-only", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        api = httpx.Client(
            base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {admin_secret}"}
        )
        runs = api.get("/runs", params={"limit": 200}).json()["items"]
        by_agent = {a: [r for r in runs if r["agent"] == a] for a in {r["agent"] for r in runs}}
        assert len(by_agent["triage"]) == 6
        assert len(by_agent["research"]) == 3
        assert {r["status"] for r in by_agent["coding"]} >= {"succeeded", "failed"}
        failed = next(r for r in by_agent["triage"] if r["status"] == "failed")
        detail = api.get(f"/runs/{failed['id']}").json()
        tool = detail["spans"][0]["children"][0]
        assert tool["name"] == "crm.lookup_customer" and tool["status"] == "error"
        assert json.loads(tool["input"]) == {"email": "dave@unknown.example"}
        # no mock LLM behind this server's gateway: the budget scenario says so and moves on
        assert "budget scenario skipped" in done.stdout
        (held,) = api.get("/approvals", params={"status": "pending"}).json()["items"]
        assert (held["agent"], held["tool"]) == ("support", "mail.send")
        assert held["arguments"]["to"] == "cfo@acme.example"
        assert api.post(f"/approvals/{held['id']}/deny").status_code == 200
    finally:
        server.stop()
