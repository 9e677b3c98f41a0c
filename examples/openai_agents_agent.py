"""An OpenAI Agents SDK agent under tether: a collections assistant that looks a customer up and
emails a payment reminder. Its model is behind tether's LLM gateway, its tools go through the
MCP gateway (where tether's policy holds `send_email` for a person), and the
TetherTracingProcessor makes the Agents trace one tether run with the gateway's calls in it.
Nothing goes to OpenAI's trace endpoint.

    python examples/run.py openai-agents --approve

Against your own tether: `TETHER_URL=... TETHER_API_KEY=<the agent's key> python
examples/openai_agents_agent.py`, POLICY applied, the mock LLM started with
`tether mock-llm --port 9999 --script examples/mock_script.yaml`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import agents
from agents import Agent, OpenAIChatCompletionsModel, RunContextWrapper, Runner, function_tool
from openai import AsyncOpenAI

sys.path.insert(0, str(Path(__file__).parent))
from mcp_tools import acall_tool

import tether
from tether.integrations.openai_agents import TetherTracingProcessor

AGENT = "collections-assistant"
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


@dataclass
class Tether:
    """What the tools need: where tether is, the agent's key and the run."""

    url: str
    key: str
    tether_run_id: str


@function_tool
async def lookup_customer(ctx: RunContextWrapper[Tether], email: str) -> str:
    """Looks a customer up in the CRM by email."""
    t = ctx.context
    return await acall_tool(t.url, t.key, t.tether_run_id, "demo.lookup_customer",
                            {"email": email})  # fmt: skip


@function_tool
async def send_email(ctx: RunContextWrapper[Tether], to: str, subject: str, body: str) -> str:
    """Sends an email (tether holds it until a person approves)."""
    t = ctx.context
    return await acall_tool(t.url, t.key, t.tether_run_id, "demo.send_email",
                            {"to": to, "subject": subject, "body": body})  # fmt: skip


async def arun(url: str, key: str, *, task_id: str | None = None) -> dict[str, Any]:
    """One Agents run of TASK; its spans go through the SDK as `tether.init` configured it."""
    processor = TetherTracingProcessor(AGENT, version="v1")
    agents.set_trace_processors([processor])  # the only processor: no vendor exporter
    config = processor.run_config(task_id=task_id or f"INV-1042-{uuid.uuid4().hex[:6]}")
    run_id = processor.run_id_of(config.trace_id or "")
    client = AsyncOpenAI(base_url=url + "/llm/v1", api_key=key, max_retries=0)
    agent = Agent(
        name=AGENT,
        instructions="You chase overdue invoices: look the customer up, then email a reminder.",
        model=OpenAIChatCompletionsModel(model="mock-small", openai_client=client),
        tools=[lookup_customer, send_email],
    )
    result = await Runner.run(agent, TASK, run_config=config, context=Tether(url, key, run_id))
    tether.flush()
    return {"run_id": run_id, "status": "done", "output": result.final_output}


def run(url: str, key: str, *, task_id: str | None = None) -> dict[str, Any]:
    return asyncio.run(arun(url, key, task_id=task_id))


def main() -> int:
    url = os.environ.get("TETHER_URL", "http://127.0.0.1:7337")
    key = os.environ.get("TETHER_API_KEY")
    if not key:
        print("set TETHER_API_KEY to the agent's key (or use examples/run.py)", file=sys.stderr)
        return 2
    tether.init(url, api_key=key)
    print(json.dumps(run(url, key)))
    tether.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
