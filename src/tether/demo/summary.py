"""The demo's closing summary, read back through tether's REST API and printed with Rich."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table


def fetch_runs(url: str, api_key: str | None, limit: int = 200) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    resp = httpx.get(
        url.rstrip("/") + "/api/v1/runs", params={"limit": limit}, headers=headers, timeout=15
    )
    resp.raise_for_status()
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


def agent_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="Runs by agent", title_justify="left")
    for col in ("agent", "versions", "runs", "ok", "failed", "killed/held", "LLM", "tools"):
        table.add_column(col, justify="left" if col in ("agent", "versions") else "right")
    table.add_column("cost", justify="right")
    by_agent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by_agent[r.get("agent") or "(unknown)"].append(r)
    for agent in sorted(by_agent):
        rs = by_agent[agent]
        count: dict[str, int] = defaultdict(int)
        for r in rs:
            count[r["status"]] += 1
        other = len(rs) - count["succeeded"] - count["failed"]
        versions = ", ".join(sorted({r["version"] for r in rs if r.get("version")}))
        table.add_row(
            agent,
            versions,
            str(len(rs)),
            str(count["succeeded"]),
            str(count["failed"]),
            str(other),
            str(sum(r["llm_calls"] for r in rs)),
            str(sum(r["tool_calls"] for r in rs)),
            f"${sum(r['cost_usd'] for r in rs):.4f}",
        )
    return table


def print_summary(console: Console, url: str, api_key: str | None, notes: list[str]) -> None:
    runs = fetch_runs(url, api_key)
    console.print(agent_table(runs))
    total = sum(r["cost_usd"] for r in runs)
    users = sorted({r["user"] for r in runs if r.get("user")})
    console.print(
        f"{len(runs)} runs, ${total:.4f} in total, users: {', '.join(users) or '-'}",
        highlight=False,
    )
    for note in notes:
        console.print(f"  • {note}", highlight=False)
