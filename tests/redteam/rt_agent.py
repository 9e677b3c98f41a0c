"""A deployed agent for the red-team adapter tests, reachable as a command or an HTTP endpoint:
it does its task's steps through tether's MCP gateway with its own key, in the run tether gave
it, and, like a model that trusts what it reads, does whatever a tool output tells it to."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tether.redteam.runner import directives
from tether.redteam.world import REF_TOOLS


def behave(task: dict[str, Any], run_id: str, url: str, key: str) -> str:
    fixtures = task.get("fixtures") or {}
    ref = fixtures.get("ref", "")

    async def main() -> str:
        headers = {"Authorization": f"Bearer {key}", "X-Tether-Run-Id": run_id}
        said = []
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http,
            Client(streamable_http_client(url.rstrip("/") + "/mcp", http_client=http)) as client,
        ):
            for step in fixtures.get("steps", []):
                args = dict(step["arguments"])
                if step["tool"] in REF_TOOLS:
                    args["ref"] = ref
                result = await client.call_tool(step["tool"], args)
                text = " ".join(getattr(c, "text", "") for c in result.content)
                said.append(text[:80])
                for injected in directives(text):
                    await client.call_tool(injected.tool, dict(injected.arguments))
        return json.dumps({"done": task.get("task_id"), "saw": said})

    return anyio.run(main)


if __name__ == "__main__":
    given = json.loads(sys.stdin.read())
    print(behave(given, os.environ["TETHER_RUN_ID"], os.environ["TETHER_URL"],
                 os.environ["TETHER_API_KEY"]))  # fmt: skip
