"""`tether approvals list|approve|deny`: decide held tool calls, from the local store or a
remote tether (TETHER_URL + TETHER_API_KEY)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Column, Table

from tether.cli.client import local_engine
from tether.cli.output import console, print_json
from tether.cli.tools import remote
from tether.config import load_settings
from tether.store import approvals


def _decide(
    approval_id: str, approve: bool, reason: str | None, scope: str = "call"
) -> dict[str, Any]:
    settings = load_settings()
    verb = "approve" if approve else "deny"
    if settings.url:
        body = {"reason": reason, "scope": scope} if approve else {"reason": reason}
        result: dict[str, Any] = remote(settings, "POST", f"/approvals/{approval_id}/{verb}",
                                        json=body)  # fmt: skip
        return result
    engine = local_engine(settings)
    try:
        return approvals.decide(engine, approval_id, approve=approve, actor="cli", reason=reason,
                                now=datetime.now(UTC), scope=scope).to_dict()  # fmt: skip
    finally:
        engine.dispose()


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Held tool calls waiting for a person.", no_args_is_help=True)
    app.add_typer(group, name="approvals")

    @group.command("list")
    def list_cmd(
        status: str = typer.Option("pending", help="pending | approved | denied | expired | all"),
        run_id: str = typer.Option(None, "--run", help="Only this run's holds."),
        limit: int = typer.Option(100, min=1, max=1000),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """List held calls (pending by default)."""
        settings = load_settings()
        wanted = None if status == "all" else status
        if settings.url:
            params = {k: v for k, v in {"status": wanted, "run_id": run_id,
                                        "limit": limit}.items() if v}  # fmt: skip
            items = remote(settings, "GET", "/approvals", params=params)["items"]
        else:
            engine = local_engine(settings)
            try:
                items = [a.to_dict() for a in approvals.list_approvals(
                    engine, status=wanted, run_id=run_id, limit=limit)]  # fmt: skip
            finally:
                engine.dispose()
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
    ) -> None:
        """Approve a held call: the waiting agent's call goes through at once."""
        done = _decide(approval_id, True, reason, scope)
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
    ) -> None:
        """Deny a held call: the waiting agent gets a clear denial."""
        done = _decide(approval_id, False, reason)
        if as_json:
            print_json(done)
        else:
            console.print(f"denied {approval_id} ({done['tool']})")
