"""The agent's own virtualenv (.venv-agents: CrewAI and AutoGen beside the SDK alone, which
cannot install beside tether[server]) and a runner that starts an example there against a
running tether, approves the calls tether holds for the example's runs, and returns what the
example printed and what left the machine; the checks the CrewAI and AutoGen tests share on
concurrent runs of their example."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.integrations.conftest import Tether

ROOT = Path(__file__).resolve().parents[2]
GUARD = Path(__file__).with_name("egress_guard.py")


def agents_python() -> Path:
    """.venv-agents' python. Under `make test` (TETHER_AGENTS_PYTHON set) a missing one fails;
    elsewhere the tests skip with how to build it."""
    explicit = os.environ.get("TETHER_AGENTS_PYTHON")
    path = Path(explicit) if explicit else ROOT / ".venv-agents" / "bin" / "python"
    if path.is_file():
        return path
    if explicit:
        pytest.fail(f"TETHER_AGENTS_PYTHON={explicit} does not exist: run `make agents-venv`")
    pytest.skip("CrewAI and AutoGen live in the agent's venv, .venv-agents, which is absent: "
                "`make agents-venv` builds it (`make test` does)")  # fmt: skip


@dataclass
class AgentRuns:
    runs: list[dict[str, Any]]  # one line per run the example printed
    approved: list[str]
    egress: list[str]  # names and addresses off this machine the example reached for
    stderr: str


def run_example(api: Tether, example: str, agent: str, policy: str, *, runs: int,
                user: str, timeout_s: float = 300) -> AgentRuns:  # fmt: skip
    """Applies `policy`, runs examples/`example` in the agent's venv with a key of `agent`
    (`--runs` at once, tasks prefixed by a fresh id) and approves every call held in them."""
    python = agents_python()
    assert api.admin.post("/policies", json={"source": policy, "file": example}).status_code < 300
    key = api.key(agent)
    prefix = f"T{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "TETHER_URL": api.url, "TETHER_API_KEY": key}
    args = [str(python), str(GUARD), str(ROOT / "examples" / example), "--runs", str(runs),
            "--task-id", prefix, "--user", user]  # fmt: skip
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)  # fmt: skip
    approved: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"{example} did not finish in {timeout_s:.0f} s"
            listed = api.admin.get("/approvals", params={"status": "pending"}).json()["items"]
            for hold in listed:
                run = api.admin.get(f"/runs/{hold['run_id']}").json()
                if str(run.get("task_id") or "").startswith(prefix):
                    why = {"reason": "approved by the test"}
                    api.admin.post(f"/approvals/{hold['id']}/approve", json=why)
                    approved.append(hold["id"])
            time.sleep(0.2)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, f"{example} exited {proc.returncode}:\n{err[-4000:]}"
    egress_lines = [ln for ln in err.splitlines() if ln.startswith("TETHER_EGRESS ")]
    assert egress_lines, f"the egress guard did not report:\n{err[-2000:]}"
    lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    egress = json.loads(egress_lines[-1].removeprefix("TETHER_EGRESS "))
    return AgentRuns(lines, approved, egress, err)


def settled(api: Tether, run_id: str, llm_calls: int, tool_calls: int) -> dict[str, Any]:
    """The run with its spans once the gateway's (written in the background) are all in."""
    deadline = time.monotonic() + 60
    while True:
        run: dict[str, Any] = api.admin.get(f"/runs/{run_id}").json()
        run["spans"] = api.admin.get(f"/runs/{run_id}/spans").json().get("items", [])
        done = (run.get("status") == "succeeded" and run.get("llm_calls") == llm_calls
                and run.get("tool_calls") == tool_calls)  # fmt: skip
        if done or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


def concurrent_runs(api: Tether) -> int:
    """Ten at once on SQLite; three on PostgreSQL, where a run costs the suite most."""
    return 10 if api.db_url.startswith("sqlite") else 3


def run_concurrently(api: Tether, example: str, agent: str, policy: str, *,
                     user: str) -> AgentRuns:  # fmt: skip
    """`run_example` with `concurrent_runs(api)` runs at once: nothing reached off the machine,
    each run printed its own tether run, and each run's held email was approved once."""
    n = concurrent_runs(api)
    done = run_example(api, example, agent, policy, runs=n, user=user)
    assert done.egress == [], f"{example} reached off the machine: {done.egress}"
    assert len(done.runs) == n and len({r["run_id"] for r in done.runs}) == n, done.runs
    assert len(done.approved) == n, done.approved  # one held email per run, approved once
    return done


def counted_once(api: Tether, line: dict[str, Any], agent: str, user: str, *,
                 llm_calls: int, tool_calls: int) -> dict[str, Any]:  # fmt: skip
    """The run of one printed `line` (with its spans) once settled: attributed to the agent,
    version v1, the line's task and `user`; the gateway's LLM and tool calls counted once, its
    cost theirs alone, its one hold approved."""
    run = settled(api, line["run_id"], llm_calls, tool_calls)
    assert (run["agent"], run["version"], run["task_id"], run["user"], run["status"]) == (
        agent, "v1", line["task_id"], user, "succeeded")  # fmt: skip
    spans = run["spans"]
    kinds = {k: sorted(s["name"] for s in spans if s["kind"] == k) for k in ("llm", "tool")}
    # the gateway's calls, once each: the framework's own tool spans are context (chain)
    assert kinds == {"llm": ["chat mock-small"] * llm_calls,
                     "tool": ["demo.lookup_customer", "demo.send_email"]}  # fmt: skip
    assert (run["llm_calls"], run["tool_calls"]) == (llm_calls, tool_calls)
    llm_cost = sum(Decimal(str(s["cost_usd"])) for s in spans if s["kind"] == "llm")
    assert llm_cost > 0 and Decimal(str(run["cost_usd"])) == llm_cost
    holds = api.admin.get("/approvals", params={"run_id": line["run_id"]}).json()
    assert [h["status"] for h in holds["items"]] == ["approved"]
    return run
