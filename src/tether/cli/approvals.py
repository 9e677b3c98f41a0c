"""`tether approvals list|approve|deny`: decide held tool calls, on the backend of cli/client.py
(a running server with TETHER_URL, else the local store)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Column, Table

from tether.cli.client import Local, opened
from tether.cli.output import DB_OPTION, console, errors, print_json


def _decide(
    approval_id: str,
    approve: bool,
    reason: str | None,
    database_url: str | None,
    scope: str = "call",
) -> dict[str, Any]:
    verb = "approve" if approve else "deny"
    with errors(), opened(database_url) as be:
        if isinstance(be, Local):
            from tether.store import approvals

            return approvals.decide(be.engine, approval_id, approve=approve, actor="cli",
                                    reason=reason, now=datetime.now(UTC),
                                    scope=scope).to_dict()  # fmt: skip
        path = f"/api/v1/approvals/{approval_id}/{verb}"
        body = {"reason": reason, "scope": scope} if approve else {"reason": reason}
        result: dict[str, Any] = be.request("POST", path, json=body)
        return result
    raise AssertionError("unreachable")  # errors() exits on failure


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Held tool calls waiting for a person.", no_args_is_help=True)
    app.add_typer(group, name="approvals")

    @group.command("list")
    def list_cmd(
        status: str = typer.Option("pending", help="pending | approved | denied | expired | all"),
        run_id: str = typer.Option(None, "--run", help="Only this run's holds."),
        limit: int = typer.Option(100, min=1, max=1000),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """List held calls (pending by default)."""
        wanted = None if status == "all" else status
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import approvals

                items = [a.to_dict() for a in approvals.list_approvals(
                    be.engine, status=wanted, run_id=run_id, limit=limit)]  # fmt: skip
            else:
                params = {k: v for k, v in {"status": wanted, "run_id": run_id,
                                            "limit": limit}.items() if v}  # fmt: skip
                items = be.request("GET", "/api/v1/approvals", params=params)["items"]
        if as_json:
            print_json({"items": items})
            return
        table = Table(
            Column("id", no_wrap=True), "status", "agent", Column("tool", no_wrap=True), "run",
            "reason", "expires",
        )  # fmt: skip
        for a in items:
            table.add_row(a["id"], a["status"], a["agent"] or "", a["tool"], a["run_id"] or "",
                          a["reason"] or "", a["expires_at"][:19])  # fmt: skip
        console.print(table)

    @group.command("approve")
    def approve_cmd(
        approval_id: str = typer.Argument(..., help="apr_..."),
        reason: str = typer.Option(None, "--reason", "-r", help="Why (kept in the audit log)."),
        scope: str = typer.Option(
            "call",
            "--scope",
            help="call (this call) | run (this tool with these arguments for "
            "the rest of the run) | counterparty (the held value, for this tool and agent)",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Approve a held call: the waiting agent's call goes through at once."""
        done = _decide(approval_id, True, reason, database_url, scope)
        if as_json:
            print_json(done)
        else:
            extra = f", scope {scope}" if scope != "call" else ""
            console.print(f"approved {approval_id} ({done['tool']}{extra})")

    @group.command("deny")
    def deny_cmd(
        approval_id: str = typer.Argument(..., help="apr_..."),
        reason: str = typer.Option(None, "--reason", "-r", help="Why (the agent is told)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Deny a held call: the waiting agent gets a clear denial."""
        done = _decide(approval_id, False, reason, database_url)
        if as_json:
            print_json(done)
        else:
            console.print(f"denied {approval_id} ({done['tool']})")
