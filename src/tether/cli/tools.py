"""`tether tools list|show|approve`: the tool registry, from the local store or a remote tether
(TETHER_URL + TETHER_API_KEY)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Column, Table

from tether.cli.client import RemoteClient, local_engine
from tether.cli.output import console, print_json
from tether.config import Settings, load_settings
from tether.store import tools as registry


def remote(settings: Settings, method: str, path: str, **kw: Any) -> Any:
    """One call to the running tether named by TETHER_URL (errors become one-line failures)."""
    return RemoteClient(settings.url or "", settings.api_key).request(
        method, f"/api/v1{path}", **kw
    )


def register(app: typer.Typer) -> None:
    tools_app = typer.Typer(help="The tool registry: tags, pins and rug-pull approvals.",
                            no_args_is_help=True)  # fmt: skip
    app.add_typer(tools_app, name="tools")

    @tools_app.command("list")
    def list_cmd(
        server: str = typer.Option(None, help="Only this upstream server's tools."),
        status: str = typer.Option(None, help="approved | changed"),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """List every tool the gateway knows, with tags and pin status."""
        settings = load_settings()
        if settings.url:
            items = remote(
                settings,
                "GET",
                "/tools",
                params={k: v for k, v in {"server": server, "status": status}.items() if v},
            )["items"]
        else:
            engine = local_engine(settings)
            items = [t.to_dict() for t in registry.list_tools(engine, server=server,
                                                              status=status)]  # fmt: skip
            engine.dispose()
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
    ) -> None:
        """Show one tool: description, schema, tags, pinned and current hash."""
        settings = load_settings()
        if settings.url:
            tool = remote(settings, "GET", f"/tools/{name}")
        else:
            engine = local_engine(settings)
            found = registry.require_tool(engine, name)
            tool = {**found.to_dict(), "diff": registry.pin_diff(engine, found)}
            engine.dispose()
        if as_json:
            print_json(tool)
            return
        for key in ("name", "server", "kind", "status", "owner", "rate_limit", "url",
                    "pinned_hash", "current_hash", "first_seen_at", "updated_at"):  # fmt: skip
            console.print(f"[bold]{key}[/]: {tool[key] if tool[key] is not None else '-'}",
                          highlight=False)  # fmt: skip
        console.print(f"[bold]tags[/]: {', '.join(tool['tags']) or '-'}", highlight=False)
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
    ) -> None:
        """Re-pin a changed tool to its current description and schema, unblocking it."""
        settings = load_settings()
        if settings.url:
            tool = remote(settings, "POST", f"/tools/{name}/approve")
        else:
            engine = local_engine(settings)
            tool = registry.approve_tool(engine, name, actor="cli", now=datetime.now(UTC)).to_dict()
            engine.dispose()
        if as_json:
            print_json(tool)
            return
        console.print(f"approved {name} (pinned sha256 {tool['pinned_hash'][:12]})")
