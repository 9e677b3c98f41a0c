"""The framework examples (examples/*.py) run against a tether: each example's policy applied,
its agent key created, the example run in a thread while its held calls are approved (or shown
for a person to decide). `tether demo` runs the ones whose framework is installed;
`examples/run.py NAME` runs one on a throwaway tether.

An example module names `AGENT` and `POLICY` and has `run(url, key, *, task_id=None)`, which
returns `{"run_id", "status", "output"}`; its run carries `task_id` from its first call on.

CrewAI and AutoGen do not install beside tether[server]: when their framework is not importable
here, their examples run in the agent's venv of the checkout (`.venv-agents`, `make
agents-venv`) as a subprocess, `AGENT` and `POLICY` read from the file without importing it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from tether.demo.scenarios import Demo
from tether.gateway.llm.mock_script import Script, load_script

# name -> (file in examples/, what it needs installed)
EXAMPLES: dict[str, tuple[str, str]] = {
    "invoice-triage": ("invoice_triage.py", "langgraph"),
    "openai-agents": ("openai_agents_agent.py", "openai-agents"),
    "plain-loop": ("plain_loop.py", "nothing beyond tether[server]"),
    "crewai-crew": ("crewai_crew.py", "crewai (.venv-agents: make agents-venv)"),
    "autogen": ("autogen_agent.py", "autogen-agentchat (.venv-agents: make agents-venv)"),
}
# examples whose framework lives in the agent's venv: name -> the package they import
AGENT_VENV = {"crewai-crew": "crewai", "autogen": "autogen_agentchat"}


def examples_dir() -> Path | None:
    """examples/ of a source checkout (an installed wheel carries none)."""
    found = Path(__file__).resolve().parents[3] / "examples"
    return found if (found / "mcp_tools.py").is_file() else None


def mock_script() -> Script:
    """The mock LLM replies the examples' tasks need (examples/mock_script.yaml)."""
    where = examples_dir()
    path = where / "mock_script.yaml" if where else None
    return load_script(path) if path and path.is_file() else Script()


def load(name: str) -> ModuleType:
    """The example module; ImportError when its framework is not installed."""
    where = examples_dir()
    if name not in EXAMPLES:
        raise KeyError(f"no example {name!r}; there are {', '.join(EXAMPLES)}")
    if where is None:
        raise ImportError("the examples live in examples/ of a source checkout of tether")
    path = where / EXAMPLES[name][0]
    if name in AGENT_VENV and importlib.util.find_spec(AGENT_VENV[name]) is None:
        python = where.parent / ".venv-agents" / "bin" / "python"
        if not python.is_file():
            raise ImportError(f"{AGENT_VENV[name]} is not installed here nor in {python}")
        return _elsewhere(path, python)
    spec = importlib.util.spec_from_file_location(f"tether_example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError:
        sys.modules.pop(spec.name, None)
        raise
    return module


def _elsewhere(path: Path, python: Path) -> ModuleType:
    """The example as a module whose `run` starts it with `python` (the agent's venv)."""
    names: dict[str, Any] = {}
    tree = ast.parse(path.read_text())
    wanted: list[ast.stmt] = [
        n for n in tree.body if isinstance(n, ast.Assign)
        and {getattr(t, "id", None) for t in n.targets} & {"AGENT", "POLICY"}]  # fmt: skip
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(path), "exec"), names)
    module = ModuleType(f"tether_example_{path.stem}", f"{path.name}, run by {python}")

    def run(url: str, key: str, *, task_id: str | None = None) -> dict[str, Any]:
        args = [str(python), str(path)] + (["--task-id", task_id] if task_id else [])
        env = {**os.environ, "TETHER_URL": url, "TETHER_API_KEY": key}
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"{path.name} exited {done.returncode}: {done.stderr[-1500:]}")
        out: dict[str, Any] = json.loads(lines[-1])
        return out

    for attr, value in (("AGENT", names["AGENT"]), ("POLICY", names["POLICY"]), ("run", run)):
        setattr(module, attr, value)
    return module


@dataclass
class ExampleRun:
    name: str
    task_id: str | None = None
    run_id: str | None = None
    status: str | None = None
    output: Any = None
    approved: list[str] = field(default_factory=list)
    error: BaseException | None = None


def run_example(
    name: str,
    module: ModuleType,
    url: str,
    admin_key: str | None,
    *,
    approve: bool,
    on_hold: Callable[[dict[str, Any]], None] | None = None,
    timeout_s: float | None = 300.0,
) -> ExampleRun:
    """Applies the example's policy, gives it an agent key and runs it; every call tether holds
    for its agent is shown to `on_hold` and approved when `approve` (else a person decides)."""
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    out = ExampleRun(name)
    with httpx.Client(base_url=url + "/api/v1", headers=headers, timeout=30) as api:
        applied = api.post("/policies", json={"source": module.POLICY, "file": f"example {name}"})
        if applied.status_code >= 300:
            raise RuntimeError(f"applying the {name} policy failed: {applied.text}")
        made = api.post("/keys", json={"scopes": ["agent", "ingest"], "agent": module.AGENT,
                                       "name": f"example {name}"})  # fmt: skip
        made.raise_for_status()
        key = str(made.json()["key"])

        # the run's task: how this runner tells its own holds from those of other runs of
        # the same agent (another runner's, or a person's)
        out.task_id = f"{name}-{os.urandom(6).hex()}"

        def work() -> None:
            try:
                result = module.run(url, key, task_id=out.task_id)
                out.run_id, out.status, out.output = (
                    result["run_id"], result["status"], result["output"])  # fmt: skip
            except BaseException as exc:  # handed back to the caller below
                out.error = exc

        worker = threading.Thread(target=work, name=f"example-{name}", daemon=True)
        worker.start()
        seen: set[str] = set()
        tasks: dict[str, str | None] = {}

        def mine(run_id: str) -> bool:
            if tasks.get(run_id) is None:
                found = api.get(f"/runs/{run_id}")
                tasks[run_id] = found.json().get("task_id") if found.status_code == 200 else None
            return tasks[run_id] == out.task_id

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while worker.is_alive():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"example {name} did not finish within {timeout_s:.0f} s")
            # listed with the agent's key: tether shows it only its own agent's holds
            listed = api.get("/approvals", params={"status": "pending"},
                             headers={"Authorization": f"Bearer {key}"})  # fmt: skip
            for hold in listed.json().get("items", []):
                if hold["id"] in seen or not mine(hold["run_id"]):
                    continue
                seen.add(hold["id"])
                if on_hold is not None:
                    on_hold(hold)
                if approve:
                    why = {"reason": f"approved by the {name} example's runner"}
                    api.post(f"/approvals/{hold['id']}/approve", json=why)
                    out.approved.append(hold["id"])
            worker.join(0.1)
    if out.error is not None:
        raise out.error
    return out


def scenario_examples(demo: Demo) -> None:
    """`tether demo`: every example whose framework is installed, its held email approved."""
    if examples_dir() is None:
        demo.notes.append("examples: skipped (they live in examples/ of a source checkout)")
        return
    if not demo.serving:
        # they need the demo's mock LLM script and MCP server, which only its own tether has
        demo.notes.append("examples: skipped (`--seed-only`: run `python examples/run.py NAME`)")
        return
    for name, (_, needs) in EXAMPLES.items():
        try:
            module = load(name)
        except ImportError as exc:
            demo.notes.append(f"examples: {name} skipped, needs {needs} ({exc})")
            continue
        try:
            done = run_example(name, module, demo.url, demo.admin_key, approve=True)
        except Exception as exc:  # one example failing must not end the tour
            demo.notes.append(f"examples: {name} failed: {type(exc).__name__}: {exc}"[:300])
            continue
        if done.run_id:
            demo.run_ids[f"example {name}"] = done.run_id
        said = str(done.output)[:70]
        demo.notes.append(
            f"examples: {name} ({module.AGENT}) run {done.run_id}: {said!r}, "
            f"{len(done.approved)} held email approved"
        )


EXAMPLES_SCENARIOS = [
    ("framework examples: LangGraph, OpenAI Agents SDK, CrewAI, AutoGen, a plain loop",
     scenario_examples)]  # fmt: skip
