"""`tether runs replay RUN [--model M]`: a recorded run step by step (its LLM calls, tool calls
and approvals as they were recorded: deterministic, no provider called), or its LLM steps
re-executed against another model through the gateway, showing where the answers diverge."""

from __future__ import annotations

import os
from typing import Any

import typer

from tether.cli.client import Backend, Local, opened
from tether.cli.output import DB_OPTION, console, errors, print_json
from tether.core.errors import BadRequestError
from tether.core.replay import Compared, first_divergence, llm_steps, messages_of

PREVIEW = 160


def steps(be: Backend, run_id: str) -> list[dict[str, Any]]:
    if isinstance(be, Local):
        from tether.store import episodes

        return [s.to_dict() for s in episodes.steps(be.engine, run_id)]
    items: list[dict[str, Any]] = be.request("GET", f"/api/v1/memory/episodes/{run_id}")["items"]
    return items


def reexecute(be: Backend, run_id: str, recorded: list[dict[str, Any]], model: str,
              max_tokens: int) -> list[Compared]:  # fmt: skip
    """Sends each recorded LLM step's messages to `model` through tether's gateway, in a new run
    of its own (task `replay:RUN`, so the cost lands on the agent's budgets like any call)."""
    if isinstance(be, Local):
        raise BadRequestError("replay --model calls the LLM gateway: set TETHER_URL (and an "
                              "agent's TETHER_API_KEY) to a running tether")  # fmt: skip
    replay_run = "run_replay_" + os.urandom(8).hex()
    out: list[Compared] = []
    for s in llm_steps(recorded):
        body = {"model": model, "messages": messages_of(s["input"]), "max_tokens": max_tokens}
        reply = be.request("POST", "/llm/v1/chat/completions", json=body, headers={
            "X-Tether-Run-Id": replay_run, "X-Tether-Task-Id": f"replay:{run_id}"})  # fmt: skip
        choice = (reply.get("choices") or [{}])[0].get("message") or {}
        text = choice.get("content") or ""
        if choice.get("tool_calls"):
            text += " " + " ".join(
                str(c.get("function", {}).get("name")) for c in choice["tool_calls"]
            )
        out.append(Compared(s["n"], s["name"], s.get("output"), text.strip()))
    return out


def _cut(text: str | None) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= PREVIEW else text[: PREVIEW - 1] + "…"


def register(runs: typer.Typer) -> None:
    @runs.command("replay")
    def replay(
        run_id: str = typer.Argument(..., help="The run to replay."),
        model: str = typer.Option(None, "--model", help="Re-execute its LLM steps on this model."),
        max_tokens: int = typer.Option(512, "--max-tokens", min=1, help="Per re-executed call."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Replay a run from its recording, or re-run its LLM steps on --model and show where
        they diverge (tools are not called again: their recorded outputs stand)."""
        with errors(), opened(database_url) as be:
            recorded = steps(be, run_id)
            compared = reexecute(be, run_id, recorded, model, max_tokens) if model else None
        if as_json:
            data: dict[str, Any] = {"run_id": run_id, "steps": recorded}
            if compared is not None:
                first = first_divergence(compared)
                data |= {"model": model, "compared": [c.to_dict() for c in compared],
                         "first_divergence": first.n if first else None}  # fmt: skip
            print_json(data)
            return
        if not recorded:
            console.print(f"run {run_id} has no recorded steps", highlight=False)
            return
        from rich.table import Table  # here: `--json` never loads Rich
        from rich.text import Text

        if compared is None:
            table = Table(header_style="bold")
            for col in ("#", "kind", "name", "input", "output"):
                table.add_column(col, overflow="fold")
            for s in recorded:
                out = Text(_cut(s["error"]), style="red") if s.get("error") else _cut(s["output"])
                table.add_row(str(s["n"]), s["kind"], s["name"], _cut(s["input"]), out)
            console.print(table)
            return
        table = Table(header_style="bold", title=f"{run_id} re-executed on {model}")
        for col in ("#", "step", "recorded", model, ""):
            table.add_column(col, overflow="fold")
        for c in compared:
            mark = Text("same", style="green") if c.same else Text("diverged", style="yellow")
            table.add_row(str(c.n), c.name, _cut(c.recorded), _cut(c.replayed), mark)
        console.print(table)
        first = first_divergence(compared)
        console.print(f"first divergence at step {first.n}" if first else "no divergence",
                      highlight=False)  # fmt: skip
