"""Pieces for `tether demo` and tutorials: the demo MCP server's config entry, a policy for it,
and `start_call`, which makes a tool call through the /mcp gateway in a background thread and
returns as soon as tether holds it for approval (or the call finishes).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tether.config import McpServerConfig


def demo_server_config(
    name: str = "demo", descriptions_file: Path | None = None
) -> McpServerConfig:
    """The `mcp_servers` entry that runs tether's demo MCP server over stdio. With
    `descriptions_file`, writing `{tool: extra text}` there changes that tool's description on
    the live server (the demo's rug pull)."""
    env = {"TETHER_DEMO_DESCRIPTIONS_FILE": str(descriptions_file)} if descriptions_file else {}
    return McpServerConfig(
        name=name,
        command=[sys.executable, "-m", "tether.gateway.mcp.demo_server"],
        tags={"fetch_page": ["untrusted"]},
        env=env,
    )


def demo_policy(agent: str, server: str = "demo") -> str:
    """A boundary policy for the demo server's tools: email held, deletes refused."""
    return f"""\
agent: {agent}
tools:
  - {{match: "{server}.lookup_customer", allow: true}}
  - {{match: "{server}.fetch_page", allow: true}}
  - {{match: "{server}.send_email", approval: required, rate_limit: "20/hour"}}
  - {{match: "{server}.delete_record", allow: false, reason: "agents never delete records"}}
data_flow:
  - {{after_tag: untrusted, require_approval_for_tag: egress}}
on_uncertain: deny
approval: {{timeout_s: 3600, default: deny}}
"""


@dataclass
class PendingCall:
    """A call running in a background thread; `approval_id` is set once tether holds it."""

    run_id: str
    approval_id: str | None = None
    result: types.CallToolResult | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout_s: float) -> types.CallToolResult | None:
        self.done.wait(timeout_s)
        if self.error is not None:
            raise self.error
        return self.result


def start_call(
    url: str,
    key: str,
    tool: str,
    arguments: dict[str, Any],
    *,
    run_id: str,
    hold_timeout_s: float = 15.0,
) -> PendingCall:
    """Calls `tool` through tether's MCP gateway at `url` with the agent key `key`.

    Returns once the call is held for approval (`approval_id` set; the call goes on waiting
    in its thread and completes when a person decides) or has finished.
    """
    pending = PendingCall(run_id=run_id)

    async def call() -> None:
        headers = {"Authorization": f"Bearer {key}", "X-Tether-Run-Id": run_id}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=None)) as http,
            Client(streamable_http_client(url.rstrip("/") + "/mcp", http_client=http)) as client,
        ):
            pending.result = await client.call_tool(tool, arguments)

    def runner() -> None:
        try:
            anyio.run(call)
        except BaseException as exc:  # handed to the caller through PendingCall.wait
            pending.error = exc
        finally:
            pending.done.set()

    threading.Thread(target=runner, name=f"tether-mcp-{tool}", daemon=True).start()
    deadline = time.monotonic() + hold_timeout_s
    with httpx.Client(base_url=url.rstrip("/") + "/api/v1", timeout=10,
                      headers={"Authorization": f"Bearer {key}"}) as api:  # fmt: skip
        while not pending.done.is_set() and time.monotonic() < deadline:
            items = api.get("/approvals", params={"status": "pending", "run_id": run_id})
            found = items.json().get("items", []) if items.status_code == 200 else []
            if found:
                pending.approval_id = found[0]["id"]
                break
            time.sleep(0.05)
    return pending
