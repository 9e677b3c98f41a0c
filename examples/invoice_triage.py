"""The invoice-triage agent in LangGraph: look the customer up, let the model triage the overdue
invoice, draft a reminder and send it, with the tools through tether's MCP gateway, the model
through its LLM gateway and every step checkpointed by TetherSaver. tether's policy holds
`send_email` for a person: the run shows `awaiting_approval` until someone approves in the
console, the CLI (`tether approvals approve ID`) or the API, and only then is the email sent.

    python examples/run.py invoice-triage            # a throwaway tether, you approve
    python examples/run.py invoice-triage --approve  # ... approved for you

Against your own tether (the mock LLM and the demo MCP server in its config, see
examples/tether.yaml): `TETHER_URL=... TETHER_API_KEY=<the agent's key> python
examples/invoice_triage.py`, with POLICY below applied (`tether policy apply`).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from openai import OpenAI

sys.path.insert(0, str(Path(__file__).parent))
from mcp_tools import call_tool

from tether.integrations.langgraph import TetherSaver, invoke

AGENT = "invoice-triage"
POLICY = f"""\
agent: {AGENT}
owner: finance-platform
budgets:
  run: {{max_cost_usd: 2.00, max_tokens: 50000, max_llm_calls: 25}}
tools:
  - {{match: "demo.lookup_customer", allow: true}}
  - {{match: "demo.send_email", approval: required, rate_limit: "60/hour",
     reason: "a person reads every reminder before it goes out"}}
  - {{match: "demo.delete_*", allow: false}}
on_uncertain: deny
approval: {{timeout_s: 3600, default: deny}}
"""
INVOICE = {"id": "INV-1042", "customer": "ada@example.com", "amount_eur": 1200, "days_overdue": 12}


class Triage(TypedDict, total=False):
    invoice: dict[str, Any]
    customer: dict[str, Any]
    verdict: str
    email: dict[str, str]
    sent: str


def build(saver: TetherSaver, key: str, *, model: str = "mock-small") -> Any:
    """The graph, compiled with `saver`; `key` is the agent's tether key (LLM and tools)."""

    def tool(config: RunnableConfig, name: str, args: dict[str, Any]) -> str:
        return call_tool(saver.url, key, saver.run_id(config), name, args)

    def lookup(state: Triage, config: RunnableConfig) -> dict[str, Any]:
        found = tool(config, "demo.lookup_customer", {"email": state["invoice"]["customer"]})
        return {"customer": json.loads(found)}

    def triage(state: Triage, config: RunnableConfig) -> dict[str, Any]:
        llm = OpenAI(base_url=saver.url + "/llm/v1", api_key=key, max_retries=0,
                     default_headers=saver.run_headers(config))  # fmt: skip
        inv, who = state["invoice"], state["customer"]
        reply = llm.chat.completions.create(model=model, messages=[{"role": "user", "content": (
            f"Invoice {inv['id']} of {inv['amount_eur']} EUR is {inv['days_overdue']} days "
            f"overdue; the customer ({who['plan']} plan) has {who['open_invoices']} open "
            "invoices. Triage it: remind, escalate or wait?")}])  # fmt: skip
        return {"verdict": reply.choices[0].message.content or ""}

    def draft(state: Triage) -> dict[str, Any]:
        inv, who = state["invoice"], state["customer"]
        body = (f"Dear {who['name']},\n\ninvoice {inv['id']} ({inv['amount_eur']} EUR) is "
                f"{inv['days_overdue']} days overdue. Could you settle it this week?\n\n"
                f"(triage: {state['verdict'][:200]})")  # fmt: skip
        return {"email": {"to": inv["customer"], "subject": f"Reminder: {inv['id']}", "body": body}}

    def send(state: Triage, config: RunnableConfig) -> dict[str, Any]:
        # held by tether's policy until a person approves; a denial raises ToolRefused
        return {"sent": tool(config, "demo.send_email", state["email"])}

    g = StateGraph(Triage)
    for name, node in (("lookup", lookup), ("triage", triage), ("draft", draft), ("send", send)):
        g.add_node(name, node)
    g.add_edge(START, "lookup")
    g.add_edge("lookup", "triage")
    g.add_edge("triage", "draft")
    g.add_edge("draft", "send")
    g.add_edge("send", END)
    return g.compile(checkpointer=saver)


def run(url: str, key: str, *, task_id: str | None = None) -> dict[str, Any]:
    """Triages INVOICE as agent `key`; returns the run id, its status and what was sent."""
    saver = TetherSaver(url, api_key=key)
    thread = task_id or f"{INVOICE['id']}-{uuid.uuid4().hex[:6]}"
    config: RunnableConfig = {"configurable": {
        "thread_id": thread, "task_id": thread, "max_tokens": 50000, "max_iterations": 25,
        "cost_limit_usd": 2.00}}  # fmt: skip
    try:
        outcome = invoke(build(saver, key), {"invoice": INVOICE}, config)
    finally:
        saver.close()
    result = outcome.result or {}
    return {"run_id": outcome.run_id, "status": outcome.status, "output": result.get("sent")}


def main() -> int:
    url = os.environ.get("TETHER_URL", "http://127.0.0.1:7337")
    key = os.environ.get("TETHER_API_KEY")
    if not key:
        print("set TETHER_API_KEY to the agent's key (or use examples/run.py)", file=sys.stderr)
        return 2
    out = run(url, key)
    print(json.dumps(out))
    return 0 if out["status"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
