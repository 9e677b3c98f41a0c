"""A hand-written agent loop under tether, no framework: the model (behind tether's LLM gateway)
picks tools, the loop calls them through the MCP gateway and feeds the results back until the
model answers. `tether.run` names the run; the gateways record every LLM and tool call in it,
enforce the caps and hold `send_email` until a person approves.

    python examples/run.py plain-loop --approve

Against your own tether: `TETHER_URL=... TETHER_API_KEY=<the agent's key> python
examples/plain_loop.py`, POLICY applied, the mock LLM started with
`tether mock-llm --port 9999 --script examples/mock_script.yaml`.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from openai import OpenAI

sys.path.insert(0, str(Path(__file__).parent))
from mcp_tools import ToolRefused, call_tool

import tether

AGENT = "reminder-loop"
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
TASK = "[[remind-overdue]] Remind ada@example.com about invoice INV-1042 (1200 EUR, 12 days late)."
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "lookup_customer",
     "description": "Look a customer up by email.",
     "parameters": {"type": "object", "properties": {"email": {"type": "string"}},
                    "required": ["email"]}}},
    {"type": "function", "function": {"name": "send_email", "description": "Send an email.",
     "parameters": {"type": "object", "properties": {
         "to": {"type": "string"}, "subject": {"type": "string"}, "body": {"type": "string"}},
         "required": ["to", "subject", "body"]}}},
]  # fmt: skip
MAX_STEPS = 8  # tether's cap (max_llm_calls) stops a runaway anyway


def loop(url: str, key: str, run_id: str, task_id: str, task: str) -> str:
    headers = {"X-Tether-Run-Id": run_id, "X-Tether-Task-Id": task_id}
    llm = OpenAI(base_url=url + "/llm/v1", api_key=key, max_retries=0, default_headers=headers)
    messages: list[Any] = [{"role": "user", "content": task}]
    for _ in range(MAX_STEPS):
        reply = llm.chat.completions.create(model="mock-small", messages=messages, tools=TOOLS)
        msg = reply.choices[0].message
        if not msg.tool_calls:
            return msg.content or ""
        messages.append(msg.model_dump(exclude_none=True))
        for call in msg.tool_calls:
            args = json.loads(call.function.arguments or "{}")
            try:
                out = call_tool(url, key, run_id, f"demo.{call.function.name}", args)
            except ToolRefused as exc:  # the model is told, as with any tool error
                out = f"Error: {exc}"
            messages.append({"role": "tool", "tool_call_id": call.id, "content": out})
    return "gave up after MAX_STEPS"


def run(url: str, key: str, *, task_id: str | None = None) -> dict[str, Any]:
    """One run of TASK; the run's spans go through the SDK as `tether.init` configured it."""
    task_id = task_id or f"INV-1042-{uuid.uuid4().hex[:6]}"
    with tether.run(agent=AGENT, task_id=task_id, input=TASK) as r:
        answer = loop(url, key, r.id, task_id, TASK)
        r.set_output(answer)
    tether.flush()
    return {"run_id": r.id, "status": "done", "output": answer}


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
