"""`tether audit verify|export|list`: the hash-chained audit log, on the backend of
cli/client.py (a running server with TETHER_URL, else the local store)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

import typer
from rich.table import Table

from tether.cli.client import Local, opened
from tether.cli.output import DB_OPTION, console, err_console, print_json
from tether.cli.policy import errors


def verify_report(database_url: str | None) -> dict[str, Any]:
    with opened(database_url) as be:
        if not isinstance(be, Local):
            report: dict[str, Any] = be.request("GET", "/api/v1/audit/verify")
            return report
        from tether.store import audit as audit_store

        report = audit_store.verify(be.engine).to_dict()
        if report["first_bad_seq"] is not None:
            bad = audit_store.get_entry(be.engine, report["first_bad_seq"])
            report["first_bad"] = bad.to_dict() if bad else None
        return report


def export_to(database_url: str | None, fh: IO[str]) -> int:
    with opened(database_url) as be:
        if isinstance(be, Local):
            from tether.store import audit as audit_store

            return audit_store.export(be.engine, fh)
        n = 0
        for line in be.lines("/api/v1/audit/export"):
            fh.write(line + "\n")
            n += 1
        return n


def list_page(database_url: str | None, action: str | None, limit: int) -> list[dict[str, Any]]:
    with opened(database_url) as be:
        if isinstance(be, Local):
            from tether.store import audit as audit_store

            entries, _ = audit_store.list_entries(be.engine, limit=limit, action=action)
            return [e.to_dict() for e in entries]
        params: dict[str, Any] = {"limit": limit}
        if action:
            params["action"] = action
        items: list[dict[str, Any]] = be.request("GET", "/api/v1/audit", params=params)["items"]
        return items


def register(app: typer.Typer) -> None:
    audit = typer.Typer(help="The audit log: verify, export, list.", no_args_is_help=True)
    app.add_typer(audit, name="audit")

    @audit.command("verify")
    def verify(
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Recompute the hash chain; exit 1 and show the first tampered entry if any."""
        with errors():
            report = verify_report(database_url)
        if as_json:
            print_json(report)
        elif report["ok"]:
            console.print(
                f"audit log intact: {report['count']} entries, head {report['head_hash']}"
            )
        else:
            err_console.print(
                f"[bold red]audit log TAMPERED[/] at entry seq {report['first_bad_seq']}: "
                f"{report['problem']}",
                highlight=False,
                soft_wrap=True,
            )
            if report.get("first_bad"):
                typer.echo(json.dumps(report["first_bad"], sort_keys=True), err=True)
        if not report["ok"]:
            raise typer.Exit(1)

    @audit.command("export")
    def export(
        output: Path = typer.Option(None, "--output", "-o", help="File to write (default stdout)."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Write every entry as JSON lines, oldest first."""
        with errors():
            if output is None:
                export_to(database_url, sys.stdout)
                return
            with output.open("w", encoding="utf-8") as fh:
                n = export_to(database_url, fh)
        typer.echo(f"wrote {n} entries to {output}", err=True)

    @audit.command("list")
    def list_(
        action: str = typer.Option(None, help="Only this action, e.g. policy.applied."),
        limit: int = typer.Option(50, min=1, max=1000, help="How many, newest first."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """The newest audit entries."""
        with errors():
            items = list_page(database_url, action, limit)
        if as_json:
            print_json({"items": items})
            return
        table = Table("seq", "at", "actor", "action", "subject", "data")
        for e in items:
            data = json.dumps(e["data"], sort_keys=True)
            table.add_row(
                str(e["seq"]),
                e["at"][:19],
                e["actor"],
                e["action"],
                e["subject"] or "",
                data if len(data) <= 60 else data[:57] + "...",
            )
        console.print(table)
