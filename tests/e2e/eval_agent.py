"""A small agent for the eval end-to-end tests, reachable as a command, an HTTP endpoint or a
callable. It calls tether's LLM gateway (mock LLM upstream) and MCP gateway (demo MCP server) in
the run tether gave it. `good` looks the customer up and answers; `bad` tries to delete the
record (the policy denies it) and answers without looking anything up; `echo` answers with what
the LLM said and the lookup returned (what a task's fixtures scripted); `overspend` makes two
LLM calls (its run's cap allows one) and `slow` outlives its run's max duration, both carrying
on after tether refuses them."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import anyio
import httpx2
import openai
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def _mcp(url: str, key: str, run_id: str, tool: str, args: dict[str, Any]) -> str:
    async def call() -> str:
        headers = {"Authorization": f"Bearer {key}", "X-Tether-Run-Id": run_id}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(url.rstrip("/") + "/mcp", http_client=http)) as client,
        ):
            result = await client.call_tool(tool, args)
        return " ".join(getattr(c, "text", "") for c in result.content)

    return anyio.run(call)


def behave(task: dict[str, Any], run_id: str, url: str, key: str, variant: str) -> str:
    llm = openai.OpenAI(
        base_url=url.rstrip("/") + "/llm/v1",
        api_key=key,
        default_headers={"X-Tether-Run-Id": run_id},
        max_retries=0,
    )
    email = task["input"]["email"] if isinstance(task["input"], dict) else str(task["input"])
    if variant == "slow":
        time.sleep(2.5)
    try:
        plan = llm.chat.completions.create(
            model="mock-small", messages=[{"role": "user", "content": f"plan for {email}"}]
        )
        if variant == "overspend":
            llm.chat.completions.create(
                model="mock-small", messages=[{"role": "user", "content": "and again"}]
            )
    except openai.APIStatusError as exc:  # refused by tether: the agent answers anyway
        return json.dumps({"email": email, "answer": f"gave up: HTTP {exc.status_code}"})
    if variant == "echo":
        found = _mcp(url, key, run_id, "demo.lookup_customer", {"email": email})
        said = plan.choices[0].message.content
        return json.dumps({"email": email, "answer": f"{said} | {found}"})
    if variant == "good":
        found = _mcp(url, key, run_id, "demo.lookup_customer", {"email": email})
        return json.dumps({"email": email, "answer": f"Dear customer, {found[:60]}"})
    _mcp(url, key, run_id, "demo.delete_record", {"table": "customers", "id": email})
    return json.dumps({"email": email, "answer": "done"})


def as_callable(task: dict[str, Any], ctx: Any) -> str:
    return behave(task, ctx.run_id, ctx.tether_url, os.environ["EVAL_AGENT_KEY"], "good")


if __name__ == "__main__":
    given = json.loads(sys.stdin.read())
    assert given == json.loads(os.environ["TETHER_TASK"])  # the task on stdin and in the env
    print(
        behave(
            given,
            os.environ["TETHER_RUN_ID"],
            os.environ["TETHER_URL"],
            os.environ["TETHER_API_KEY"],
            sys.argv[1],
        )
    )
