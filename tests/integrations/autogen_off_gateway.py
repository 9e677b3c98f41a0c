"""Run in the agent's venv by test_autogen.py: an AssistantAgent inside `tracer.run()` with its
model client NOT behind tether's gateway (straight to the mock upstream, MOCK_URL) and local
tools, so TetherAutoGen records the LLM calls itself from AutoGen's LLMCall events (tokens)
beside AutoGen's agent and tool spans. Prints the run id and the agent's answer."""

from __future__ import annotations

import asyncio
import json
import os

from autogen_agentchat.agents import AssistantAgent
from autogen_ext.models.openai import OpenAIChatCompletionClient

import tether
from tether.integrations.autogen import TetherAutoGen

INFO: dict[str, object] = {"vision": False, "function_calling": True, "json_output": False,
                           "family": "unknown", "structured_output": False}  # fmt: skip


async def lookup_customer(email: str) -> str:
    """Looks a customer up in the CRM by email."""
    return "Ada Lovelace, enterprise plan"


async def send_email(to: str, subject: str, body: str) -> str:
    """Sends an email."""
    return f"sent email #1 to {to}"


async def main() -> dict[str, str]:
    tracer = TetherAutoGen("autogen-off-gateway", version="v2", llm_via_gateway=False)
    with tracer.run(task_id="OFF-1", user="carol") as run:
        client = OpenAIChatCompletionClient(model="mock-small", base_url=os.environ["MOCK_URL"],
                                            api_key="mock", model_info=INFO)  # fmt: skip
        agent = AssistantAgent("offline", model_client=client, max_tool_iterations=5,
                               tools=[lookup_customer, send_email])  # fmt: skip
        run.output = await agent.run(task="[[remind-overdue]] Remind ada@example.com.")
    return {"run_id": run.run_id, "output": run.output.messages[-1].content}


tether.init(os.environ["TETHER_URL"], api_key=os.environ["TETHER_API_KEY"])
done = asyncio.run(main())
tether.shutdown()
print(json.dumps(done))
