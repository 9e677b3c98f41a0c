"""`tether tools list|show|approve`: the tool registry, on the backend of cli/client.py (a
running server with TETHER_URL, else the local store)."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich.table import Column, Table

from tether.cli.client import Local, opened
from tether.cli.output import DB_OPTION, console, errors, print_json


def register(app: typer.Typer) -> None:
    tools_app = typer.Typer(help="The tool registry: tags, pins and rug-pull approvals.",
                            no_args_is_help=True)  # fmt: skip
    app.add_typer(tools_app, name="tools")

    @tools_app.command("list")
    def list_cmd(
        server: str = typer.Option(None, help="Only this upstream server's tools."),
        status: str = typer.Option(None, help="approved | changed"),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """List every tool the gateway knows, with tags and pin status."""
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import tools as registry

                found = registry.list_tools(be.engine, server=server, status=status)
                items = [t.to_dict() for t in found]
            else:
                params = {k: v for k, v in {"server": server, "status": status}.items() if v}
                items = be.request("GET", "/api/v1/tools", params=params)["items"]
        if as_json:
            print_json({"items": items})
            return
        table = Table(Column("name", no_wrap=True), "kind", "status",
                      "tags", "rate limit", "pin")  # fmt: skip
        for t in items:
            status_text = t["status"] if t["status"] == "approved" else f"[red]{t['status']}[/]"
            table.add_row(t["name"], t["kind"], status_text, ", ".join(t["tags"]),
                          t["rate_limit"] or "", (t["pinned_hash"] or "")[:8])  # fmt: skip
        console.print(table)

    @tools_app.command("show")
    def show_cmd(
        name: str = typer.Argument(..., help="server.tool"),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Show one tool: description, schema, tags, pinned and current hash."""
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import tools as registry

                found = registry.require_tool(be.engine, name)
                tool = {**found.to_dict(), "diff": registry.pin_diff(be.engine, found)}
            else:
                tool = be.request("GET", f"/api/v1/tools/{name}")
        if as_json:
            print_json(tool)
            return
        for key in ("name", "server", "kind", "status", "owner", "rate_limit", "url",
                    "pinned_hash", "current_hash", "first_seen_at", "updated_at"):  # fmt: skip
            console.print(f"[bold]{key}[/]: {tool[key] if tool[key] is not None else '-'}",
                          highlight=False)  # fmt: skip
        console.print(f"[bold]tags[/]: {', '.join(tool['tags']) or '-'}", highlight=False)
        console.print(f"[bold]systems[/]: {', '.join(tool.get('systems') or []) or '-'}",
                      highlight=False)  # fmt: skip
        console.print(f"[bold]description[/]: {tool['description'] or '-'}", highlight=False)
        if tool.get("diff"):
            console.print(tool["diff"], highlight=False, markup=False)
        if tool["status"] == "changed":
            console.print(f"[red]changed since it was approved: run `tether tools approve "
                          f"{name}` once you have reviewed it[/]")  # fmt: skip

    @tools_app.command("approve")
    def approve_cmd(
        name: str = typer.Argument(..., help="server.tool"),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Re-pin a changed tool to its current description and schema, unblocking it."""
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import tools as registry

                now = datetime.now(UTC)
                tool = registry.approve_tool(be.engine, name, actor="cli", now=now).to_dict()
            else:
                tool = be.request("POST", f"/api/v1/tools/{name}/approve")
        if as_json:
            print_json(tool)
            return
        console.print(f"approved {name} (pinned sha256 {tool['pinned_hash'][:12]})")
