"""`tether runs checkpoints RUN` (a LangGraph run's timeline) and `tether runs resume RUN`
(ask the agent's saver to go on from a checkpoint, with state updates)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer

from tether.cli.client import Backend, Local, opened
from tether.cli.output import DB_OPTION, console, errors, fail, print_json

if TYPE_CHECKING:  # Rich is imported where a table is drawn: `--json` never loads it
    from rich.table import Table

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
    from rich.table import Table
    from rich.text import Text

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
            c["created_at"][11:19],
        )
    return table


def checkpoints_of(be: Backend, run_id: str) -> dict[str, Any]:
    """The run's timeline, as GET /api/v1/runs/{id}/checkpoints returns it."""
    if isinstance(be, Local):
        from tether.store import runs as run_store
        from tether.store.timeline import timeline

        run_store.get_run(be.engine, run_id)  # not found: one line, exit 1
        return {"items": timeline(be.engine, run_id), "next_cursor": None}
    out: dict[str, Any] = be.request("GET", f"/api/v1/runs/{run_id}/checkpoints")
    return out


def request_resume(be: Backend, run_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """The request of POST /api/v1/runs/{id}/resume (locally the same store write)."""
    if isinstance(be, Local):
        from datetime import UTC, datetime

        from tether.store import runs as run_store
        from tether.store import threads

        run_store.get_run(be.engine, run_id)
        return threads.request_resume(
            be.engine,
            run_id,
            checkpoint_id=body["checkpoint_id"],
            update_values=body["update"],
            actor="cli",
            now=datetime.now(UTC),
        )
    out: dict[str, Any] = be.request("POST", f"/api/v1/runs/{run_id}/resume", json=body)
    return out


def add_commands(runs: typer.Typer) -> None:
    """Adds `checkpoints` and `resume` to the `tether runs` group."""

    @runs.command("checkpoints")
    def checkpoints(
        run_id: str = typer.Argument(..., help="The run's id."),
        as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """A LangGraph run's checkpoints, oldest first: step, node, what changed, pending
        writes and interrupts."""
        with errors(), opened(database_url) as be:
            data = checkpoints_of(be, run_id)
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
        as_json: bool = typer.Option(False, "--json", help="Print the JSON reply."),
        database_url: str = DB_OPTION,
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
        body = {"checkpoint_id": checkpoint, "update": values}
        with errors(), opened(database_url) as be:
            out = request_resume(be, run_id, body)
        if as_json:
            print_json(out)
        else:
            where = checkpoint or "its latest checkpoint"
            console.print(
                f"resume of {run_id} from {where} requested ({out['id']}); the agent "
                "takes it with resume_requested(graph)",
                highlight=False,
            )
