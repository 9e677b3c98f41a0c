"""A CrewAI crew under tether: a collections clerk that looks a customer up and emails a payment
reminder. Its model is behind tether's LLM gateway, its tools go through the MCP gateway (where
tether's policy holds `send_email` for a person), and the TetherCrewListener makes the crew's
run one tether run with the gateway's calls in it. CrewAI's telemetry and trace upload are off.

CrewAI does not install beside `tether[server]` (it needs mcp<2), so it runs from the agent's
own environment, `.venv-agents` (`make .venv-agents`); examples/run.py and `tether demo` use it:

    python examples/run.py crewai-crew --approve

Against your own tether: `TETHER_URL=... TETHER_API_KEY=<the agent's key>
.venv-agents/bin/python examples/crewai_crew.py [--runs 10]`, POLICY applied, the mock LLM
started with `tether mock-llm --port 9999 --script examples/mock_script.yaml`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from mcp_tools import ToolRefused, call_tool

import tether
from tether.integrations.crewai import TetherCrewListener

AGENT = "collections-crew"
POLICY = f"""\
agent: {AGENT}
owner: finance-platform
budgets:
  run: {{max_cost_usd: 0.50, max_llm_calls: 10}}
tools:
  - {{match: "demo.lookup_customer", allow: true}}
  - {{match: "demo.send_email", approval: required, reason: "reminders are read before sending"}}
on_uncertain: deny
approval: {{timeout_s: 3600, default: deny}}
"""
# the mock LLM's script (examples/mock_script.yaml) answers this task with the two tool calls
TASK = "[[remind-overdue]] Remind ada@example.com about invoice INV-1042 (1200 EUR, 12 days late)."

_listener: TetherCrewListener | None = None


def listener() -> TetherCrewListener:
    """One listener per process (it registers on CrewAI's event bus)."""
    global _listener
    if _listener is None:
        # the tools call tether's MCP gateway, which records each call: no second tool span
        _listener = TetherCrewListener(AGENT, version="v1", tools_via_gateway=True)
    return _listener


def build_crew(url: str, key: str, run_id: str, headers: dict[str, str]) -> Any:
    from crewai import LLM, Agent, Crew, Task
    from crewai.tools import tool

    def through_tether(name: str, arguments: dict[str, Any]) -> str:
        try:
            return call_tool(url, key, run_id, f"demo.{name}", arguments)
        except ToolRefused as exc:  # the model is told, as with any tool error
            return f"Error: {exc}"

    @tool("lookup_customer")
    def lookup_customer(email: str) -> str:
        """Looks a customer up in the CRM by email."""
        return through_tether("lookup_customer", {"email": email})

    @tool("send_email")
    def send_email(to: str, subject: str, body: str) -> str:
        """Sends an email (tether holds it until a person approves)."""
        return through_tether("send_email", {"to": to, "subject": subject, "body": body})

    llm = LLM(model="openai/mock-small", base_url=url + "/llm/v1", api_key=key,
              default_headers=headers, max_retries=0)  # fmt: skip
    clerk = Agent(role="Collections clerk", goal="Chase overdue invoices politely",
                  backstory="You look the customer up, then email a reminder.", llm=llm,
                  tools=[lookup_customer, send_email], max_iter=6)  # fmt: skip
    task = Task(description=TASK, expected_output="What was sent to whom", agent=clerk)
    return Crew(agents=[clerk], tasks=[task], tracing=False)


def run(
    url: str, key: str, *, task_id: str | None = None, user: str | None = None
) -> dict[str, Any]:
    """One crew run of TASK; its spans go through the SDK as `tether.init` configured it."""
    with listener().run(
        task_id=task_id or f"INV-1042-{uuid.uuid4().hex[:6]}", user=user
    ) as crew_run:
        crew = build_crew(url, key, crew_run.run_id, crew_run.headers())
        output = crew.kickoff().raw
    tether.flush()
    return {"run_id": crew_run.run_id, "status": "done", "output": output}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-id", help="the run's task (default: a new one)")
    parser.add_argument("--user", help="the person the run is for")
    parser.add_argument("--runs", type=int, default=1, help="crews kicked off at once")
    args = parser.parse_args(argv)
    url = os.environ.get("TETHER_URL", "http://127.0.0.1:7337")
    key = os.environ.get("TETHER_API_KEY")
    if not key:
        print("set TETHER_API_KEY to the agent's key (or use examples/run.py)", file=sys.stderr)
        return 2
    tether.init(url, api_key=key)
    tasks = [args.task_id if args.runs == 1 and args.task_id else
             f"{args.task_id or 'INV-1042'}-{i}-{uuid.uuid4().hex[:6]}"
             for i in range(args.runs)]  # fmt: skip
    with ThreadPoolExecutor(args.runs) as pool:  # each crew in its own thread, its own run
        runs = pool.map(lambda t: run(url, key, task_id=t, user=args.user), tasks)
        for task, done in zip(tasks, runs, strict=True):
            print(json.dumps({**done, "task_id": task}), flush=True)
    tether.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
