"""The demo's governed scenarios: a runaway coding agent stopped by its run budget in tether's LLM
gateway (mock LLM upstream), and a support agent whose email waits for a person's approval via
`/api/v1/decide`. Both use only public surfaces: the REST API, the gateway and the SDK."""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any

import httpx

import tether
from tether.demo.scenarios import Demo, lookup_customer, pause

BUDGET_USD = 0.25

CODING_POLICY = f"""\
agent: coding
owner: platform-eng
models: [mock-large, mock-small]
budgets:
  run: {{max_cost_usd: {BUDGET_USD}, max_llm_calls: 40}}
  day: {{max_cost_usd: 20}}
"""

SUPPORT_POLICY = """\
agent: support
owner: customer-success
tools:
  - {match: "crm.*", allow: true}
  - {match: "mail.send", approval: required}
  - {match: "billing.delete_*", allow: false}
approval: {timeout_s: 3600, default: deny}
"""


def _api(demo: Demo) -> httpx.Client:
    headers = {"Authorization": f"Bearer {demo.admin_key}"} if demo.admin_key else {}
    return httpx.Client(base_url=demo.url + "/api/v1", headers=headers, timeout=15)


def apply_policy(demo: Demo, source: str) -> None:
    with _api(demo) as api:
        resp = api.post("/policies", json={"source": source, "file": "demo"})
        if resp.status_code >= 300:
            raise RuntimeError(f"applying the demo policy failed: {resp.text}")


def agent_key(demo: Demo, agent: str) -> str:
    with _api(demo) as api:
        resp = api.post(
            "/keys", json={"scopes": ["agent", "ingest"], "agent": agent, "name": f"demo-{agent}"}
        )
        resp.raise_for_status()
        return str(resp.json()["key"])


def _gateway_has_mock(demo: Demo, key: str) -> bool:
    try:
        resp = httpx.get(
            demo.url + "/llm/v1/models", timeout=5, headers={"Authorization": f"Bearer {key}"}
        )
    except httpx.HTTPError:
        return False
    return resp.status_code == 200 and "mock-large" in resp.text


def scenario_budget_kill(demo: Demo) -> None:
    """A coding agent in a loop, its context growing, calling mock-large through the gateway
    until the run budget refuses the next call (HTTP 402); then the run is killed."""
    import openai

    if not demo.admin_key:
        demo.notes.append("budget scenario skipped: needs an admin key (TETHER_API_KEY)")
        return
    apply_policy(demo, CODING_POLICY)
    key = agent_key(demo, "coding")
    if not _gateway_has_mock(demo, key):
        demo.notes.append("budget scenario skipped: the gateway has no mock-large model")
        return
    client = tether.instrument_openai(
        openai.OpenAI(base_url=demo.url + "/llm/v1", api_key=key, max_retries=0)
    )
    messages: list[Any] = [
        {"role": "system", "content": "You refactor code until tests pass."},
        {"role": "user", "content": "Refactor the billing module. " * 40},
    ]
    calls = 0
    with tether.run(
        agent="coding",
        task_id="C-304",
        user="erin",
        version="v3",
        input="refactor billing (runaway loop)",
    ) as run:
        try:
            for _ in range(40):
                reply = client.chat.completions.create(
                    model="mock-large", messages=messages, max_tokens=800
                )
                calls += 1
                messages.append({"role": "assistant", "content": reply.choices[0].message.content})
                messages.append({"role": "user", "content": "Tests still fail. Try again. " * 30})
                pause(300)
        except openai.APIStatusError as exc:
            if exc.status_code != 402:
                raise
            reason = _kill_reason(exc, calls)
            refusal = _refusal_detail(exc)
            if refusal:
                demo.notes.append(f"the gateway refused call {calls + 1} with 402: {refusal}")
            with _api(demo) as api:
                api.post(f"/runs/{run.id}/kill", json={"reason": reason})
            run.set_output(f"stopped by tether: {reason}")
    demo.run_ids["budget"] = run.id
    tether.flush()
    with _api(demo) as api:
        got = api.get(f"/runs/{run.id}").json()
    demo.notes.append(
        f"coding v3 (C-304) was {got.get('status')} by its run budget: allowed "
        f"${BUDGET_USD:.2f}, spent ${got.get('cost_usd', 0):.4f} in {calls} LLM calls"
    )


def _kill_reason(exc: Any, calls: int) -> str:
    """What happened, in numbers: the budget is not spent, the next call's worst case did not
    fit in what was left (the 402's `needed_usd` / `remaining_usd` fields)."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)
    fields = error if isinstance(error, dict) else {}
    needed, left = fields.get("needed_usd"), fields.get("remaining_usd")
    if isinstance(needed, int | float) and isinstance(left, int | float):
        return (
            f"call {calls + 1}'s worst case ${needed:.4f} did not fit in the ${left:.4f} left "
            f"of the ${BUDGET_USD:.2f} run budget (after {calls} LLM calls)"
        )
    return f"call {calls + 1} refused by the ${BUDGET_USD:.2f} run budget (after {calls} calls)"


def _refusal_detail(exc: Any) -> str | None:
    """The 402's message: which scope, the call's worst case, what was left."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)
    message = error.get("message") if isinstance(error, dict) else None
    return message.split(". ")[0] if isinstance(message, str) else None


@tether.tool(name="mail.send", tags=["egress"], irreversible=True)
def send_email(to: str, subject: str, body: str) -> str:
    pause(100)
    return f"sent '{subject}' to {to}"


def _support_run(demo: Demo, started: threading.Event) -> None:
    try:
        with tether.run(
            agent="support",
            task_id="S-501",
            user="dana",
            version="v1",
            input="Email the Q3 invoice to the customer's CFO",
        ) as run:
            demo.run_ids["approval"] = run.id
            customer = lookup_customer("cfo@acme.example")
            tether.flush()  # the run is stored before it is held
            started.set()
            out = send_email(customer["email"], "Your Q3 invoice", "Attached: INV-2041 ($420)")
            run.set_output(out)
    except tether.ToolDeniedError as exc:
        demo.notes.append(f"support S-501: {exc}")
    finally:
        started.set()


def scenario_approval(demo: Demo) -> None:
    """A support agent's email (an irreversible tool) is held until a person approves it."""
    if not demo.admin_key:
        demo.notes.append("approval scenario skipped: needs an admin key (TETHER_API_KEY)")
        return
    apply_policy(demo, SUPPORT_POLICY)
    started = threading.Event()
    ctx = contextvars.copy_context()
    threading.Thread(
        target=ctx.run, args=(_support_run, demo, started), daemon=True, name="demo-support-agent"
    ).start()
    started.wait(15)
    run_id = demo.run_ids.get("approval")
    approval = None
    with _api(demo) as api:
        deadline = time.monotonic() + 10
        while approval is None and time.monotonic() < deadline:
            items = api.get("/approvals", params={"status": "pending"}).json().get("items", [])
            approval = next((a for a in items if a.get("run_id") == run_id), None)
            time.sleep(0.05)
    if approval is None:
        demo.notes.append("support S-501: no approval was held (check the support policy)")
        return
    demo.notes.append(
        f"support S-501 waits for approval {approval['id']} to send an email: approve it in "
        f"the console (/approvals) or `tether approvals approve {approval['id']}`"
    )


GOVERNED = [
    (
        "coding agent v3: a runaway loop stopped by its run budget (LLM gateway)",
        scenario_budget_kill,
    ),
    ("support agent: an email held for human approval", scenario_approval),
]
