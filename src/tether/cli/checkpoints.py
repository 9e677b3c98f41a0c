"""`tether runs checkpoints RUN` (a LangGraph run's timeline) and `tether runs resume RUN`
(ask the agent's saver to go on from a checkpoint, with state updates)."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from tether.cli import client as clients
from tether.cli.output import console, fail, print_json
from tether.cli.runs import _call, _settings, when
from tether.store import runs as run_store
from tether.store.timeline import timeline

MAX_CELL = 60


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def changes(c: dict[str, Any]) -> str:
    """The diff of a checkpoint in one cell: `+new`, `~changed=value`, `-removed`."""
    d = c["diff"]
    parts = [f"+{k}={_short(v)}" for k, v in d["added"].items()]
    parts += [f"~{k}={_short(v['after'])}" for k, v in d["changed"].items()]
    parts += [f"-{k}" for k in d["removed"]]
    return "  ".join(parts)


def timeline_table(items: list[dict[str, Any]]) -> Table:
    table = Table(header_style="bold")
    for name in ("step", "node", "checkpoint", "changed", "pending", "at"):
        table.add_column(name, no_wrap=name in ("step", "checkpoint", "at"))
    for c in items:
        pending = [f"{w['node'] or '?'}→{w['channel']}" for w in c["pending_writes"]]
        if c["interrupts"]:
            pending.insert(0, f"✋ {len(c['interrupts'])} interrupt(s)")
        table.add_row(
            str(c["step"]),
            ", ".join(c["nodes"]) or (c["source"] or ""),
            c["checkpoint_id"],
            Text(changes(c)),
            Text(", ".join(pending), style="yellow"),
            when(c["created_at"], "%H:%M:%S"),
        )
    return table


def _timeline(run_id: str) -> dict[str, Any]:
    settings = _settings()
    client = _call(lambda: clients.make_client(settings))
    if isinstance(client, clients.RemoteClient):
        return _call(lambda: client.request("GET", f"/api/v1/runs/{run_id}/checkpoints"))
    assert isinstance(client, clients.LocalClient)
    engine = client.engine
    _call(lambda: run_store.get_run(engine, run_id))
    return {"items": timeline(engine, run_id), "next_cursor": None}


def register(app: typer.Typer) -> None:
    runs = next(g.typer_instance for g in app.registered_groups if g.name == "runs")
    assert runs is not None

    @runs.command("checkpoints")
    def checkpoints(
        run_id: str = typer.Argument(..., help="The run's id."),
        as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
    ) -> None:
        """A LangGraph run's checkpoints, oldest first: step, node, what changed, pending
        writes and interrupts."""
        data = _timeline(run_id)
        if as_json:
            print_json(data)
        elif not data["items"]:
            console.print(
                f"run {run_id} has no checkpoints (only runs that use TetherSaver do)",
                highlight=False,
            )
        else:
            console.print(timeline_table(data["items"]))
            console.print(
                f"[dim]resume from one: tether runs resume {run_id} --checkpoint ID[/]",
                highlight=False,
            )

    @runs.command("resume")
    def resume(
        run_id: str = typer.Argument(..., help="The run to resume."),
        checkpoint: str = typer.Option(None, "--checkpoint", help="Default: the latest."),
        update: str = typer.Option(
            None, "--update", help='State values first, e.g. \'{"plan": "..."}\''
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the server's JSON reply."),
    ) -> None:
        """Ask the run's agent to go on from a checkpoint (its TetherSaver takes the request;
        a Job-style agent takes it when it starts again)."""
        values = None
        if update is not None:
            try:
                values = json.loads(update)
            except json.JSONDecodeError as exc:
                fail(f"--update: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", 2)
            if not isinstance(values, dict):
                fail('--update: give a JSON object of state values, e.g. \'{"plan": "..."}\'', 2)
        settings = _settings()
        if not settings.api_key:
            fail("set TETHER_API_KEY to an admin key (`tether keys create --scopes admin`)", 2)
        client = clients.server_client(settings)
        body = {"checkpoint_id": checkpoint, "update": values}
        out = _call(lambda: client.request("POST", f"/api/v1/runs/{run_id}/resume", json=body))
        if as_json:
            print_json(out)
        else:
            where = checkpoint or "its latest checkpoint"
            console.print(
                f"resume of {run_id} from {where} requested ({out['id']}); the agent "
                "takes it with resume_requested(graph)",
                highlight=False,
            )
