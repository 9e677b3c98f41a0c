"""Run in the agent's venv by test_crewai.py: a crew kicked off outside `listener.run()` with its
model NOT behind tether's gateway (straight to the mock upstream, MOCK_URL) and local tools, so
the listener records everything itself: the kickoff is a run of its own, with CrewAI's LLM
calls (tokens from CrewAI's events) and tool calls as its spans. Prints the crew's answer."""

from __future__ import annotations

import json
import os

from crewai import LLM, Agent, Crew, Task
from crewai.events import crewai_event_bus
from crewai.tools import tool

import tether
from tether.integrations.crewai import TetherCrewListener

tether.init(os.environ["TETHER_URL"], api_key=os.environ["TETHER_API_KEY"])
TetherCrewListener("crew-off-gateway", version="v2", llm_via_gateway=False)


@tool("lookup_customer")
def lookup_customer(email: str) -> str:
    """Looks a customer up in the CRM by email."""
    return "Ada Lovelace, enterprise plan"


@tool("send_email")
def send_email(to: str, subject: str, body: str) -> str:
    """Sends an email."""
    return f"sent email #1 to {to}"


llm = LLM(model="openai/mock-small", base_url=os.environ["MOCK_URL"], api_key="mock")
clerk = Agent(role="Offline clerk", goal="Chase invoices", backstory="Careful.", llm=llm,
              tools=[lookup_customer, send_email], max_iter=6)  # fmt: skip
task = Task(description="[[remind-overdue]] Remind ada@example.com about INV-1042.",
            expected_output="What was sent", agent=clerk)  # fmt: skip
answer = Crew(agents=[clerk], tasks=[task], tracing=False).kickoff().raw
crewai_event_bus.flush()
tether.shutdown()
print(json.dumps({"output": answer}))
