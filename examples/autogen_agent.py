"""An AutoGen agent under tether: an AssistantAgent that looks a customer up and emails a payment
reminder. Its model client is behind tether's LLM gateway, its tools go through the MCP gateway
(where tether's policy holds `send_email` for a person), and TetherAutoGen makes AutoGen's own
spans (invoke_agent, execute_tool) and events one tether run with the gateway's calls in it.

AutoGen does not install beside `tether[server]` (autogen-core needs protobuf 5.29), so it runs
from the agent's own environment, `.venv-agents` (`make .venv-agents`); examples/run.py and
`tether demo` use it:

    python examples/run.py autogen --approve

Against your own tether: `TETHER_URL=... TETHER_API_KEY=<the agent's key>
.venv-agents/bin/python examples/autogen_agent.py [--runs 10]`, POLICY applied, the mock LLM
started with `tether mock-llm --port 9999 --script examples/mock_script.yaml`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from mcp_tools import ToolRefused, acall_tool

import tether
from tether.integrations.autogen import TetherAutoGen

AGENT = "collections-autogen"
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
# a model name AutoGen does not know needs its capabilities said
MODEL_INFO: Any = {"vision": False, "function_calling": True, "json_output": False,
                   "family": "unknown", "structured_output": False}  # fmt: skip

_tracer: TetherAutoGen | None = None


def tracer() -> TetherAutoGen:
    global _tracer
    if _tracer is None:
        # the tools call tether's MCP gateway, which records each call: no second tool span
        _tracer = TetherAutoGen(AGENT, version="v1", tools_via_gateway=True)
    return _tracer


def build_agent(url: str, key: str, run_id: str, headers: dict[str, str]) -> Any:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    async def through_tether(name: str, arguments: dict[str, Any]) -> str:
        try:
            return await acall_tool(url, key, run_id, f"demo.{name}", arguments)
        except ToolRefused as exc:  # the model is told, as with any tool error
            return f"Error: {exc}"

    async def lookup_customer(email: str) -> str:
        """Looks a customer up in the CRM by email."""
        return await through_tether("lookup_customer", {"email": email})

    async def send_email(to: str, subject: str, body: str) -> str:
        """Sends an email (tether holds it until a person approves)."""
        return await through_tether("send_email", {"to": to, "subject": subject, "body": body})

    client = OpenAIChatCompletionClient(
        model="mock-small", base_url=url + "/llm/v1", api_key=key, default_headers=headers,
        model_info=MODEL_INFO, max_retries=0,
    )  # fmt: skip
    return AssistantAgent(
        AGENT.replace("-", "_"), model_client=client, tools=[lookup_customer, send_email],
        system_message="You chase overdue invoices: look the customer up, then email a reminder.",
        max_tool_iterations=5,
    )  # fmt: skip


async def arun(
    url: str, key: str, *, task_id: str | None = None, user: str | None = None
) -> dict[str, Any]:
    """One AutoGen run of TASK; its spans go through the SDK as `tether.init` configured it."""
    with tracer().run(task_id=task_id or f"INV-1042-{uuid.uuid4().hex[:6]}", user=user) as run:
        agent = build_agent(url, key, run.run_id, run.headers())
        run.output = await agent.run(task=TASK)
    tether.flush()
    return {"run_id": run.run_id, "status": "done", "output": run.output.messages[-1].content}


def run(
    url: str, key: str, *, task_id: str | None = None, user: str | None = None
) -> dict[str, Any]:
    return asyncio.run(arun(url, key, task_id=task_id, user=user))


async def amain(url: str, key: str, task_id: str | None, user: str | None, runs: int) -> None:
    tasks = [task_id if runs == 1 and task_id else
             f"{task_id or 'INV-1042'}-{i}-{uuid.uuid4().hex[:6]}"
             for i in range(runs)]  # fmt: skip
    # concurrent runs in one event loop, each in its own task and so its own tether run
    done = await asyncio.gather(*(arun(url, key, task_id=t, user=user) for t in tasks))
    for task, one in zip(tasks, done, strict=True):
        print(json.dumps({**one, "task_id": task}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-id", help="the run's task (default: a new one)")
    parser.add_argument("--user", help="the person the run is for")
    parser.add_argument("--runs", type=int, default=1, help="agents run at once")
    args = parser.parse_args(argv)
    url = os.environ.get("TETHER_URL", "http://127.0.0.1:7337")
    key = os.environ.get("TETHER_API_KEY")
    if not key:
        print("set TETHER_API_KEY to the agent's key (or use examples/run.py)", file=sys.stderr)
        return 2
    tether.init(url, api_key=key)
    asyncio.run(amain(url, key, args.task_id, args.user, args.runs))
    tether.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
