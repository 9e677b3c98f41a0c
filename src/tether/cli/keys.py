"""`tether keys create|list|revoke`: API keys, on the backend of cli/client.py (a running
server's /api/v1/keys with TETHER_URL, else the local store). `keys create` on a local store
creates and migrates it: that is how the first key is made, before any key can call the API."""

from __future__ import annotations

import getpass
from datetime import datetime
from typing import Any

import typer
from rich.table import Table

from tether.cli.client import Local, opened
from tether.cli.output import DB_OPTION, console, errors, print_json


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
    app.add_typer(keys, name="keys")

    @keys.command("create")
    def create(
        scopes: str = typer.Option(..., help="Comma-separated: admin, ingest, agent, read."),
        agent: str = typer.Option(None, help="The agent this key speaks for (agent scope)."),
        name: str = typer.Option(None, help="A label to tell keys apart."),
        as_json: bool = typer.Option(False, "--json", help='Print {"id", "key"} as JSON.'),
        database_url: str = DB_OPTION,
    ) -> None:
        """Create a key. The secret is printed this once; tether keeps only its hash."""
        with errors(), opened(database_url, create=True) as be:
            if isinstance(be, Local):
                from tether.store import keys as key_store

                key, secret = key_store.create_key(
                    be.engine, scopes=scopes, agent=agent, name=name, actor=_actor()
                )
                made: dict[str, Any] = {**key.to_dict(), "key": secret}
            else:
                body = {"scopes": scopes.split(","), "agent": agent, "name": name}
                made = be.request("POST", "/api/v1/keys", json=body)
        if as_json:
            print_json({"id": made["id"], "key": made["key"]})
            return
        console.print(f"created [bold]{made['id']}[/] scopes={','.join(made['scopes'])}"
                      + (f" agent={made['agent']}" if made.get("agent") else ""),
                      highlight=False)  # fmt: skip
        console.print(made["key"], highlight=False, soft_wrap=True)
        console.print("[yellow]store the secret now: it is not shown again[/]")

    @keys.command("list")
    def list_(
        include_revoked: bool = typer.Option(False, "--all", help="Include revoked keys."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """List keys (never their secrets)."""
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import keys as key_store

                found = key_store.list_keys(be.engine, include_revoked=include_revoked)
                items: list[dict[str, Any]] = [k.to_dict() for k in found]
            else:
                params = {"include_revoked": "true"} if include_revoked else {}
                items = be.request("GET", "/api/v1/keys", params=params)["items"]
        if as_json:
            print_json({"items": items, "next_cursor": None})
            return
        table = Table("id", "name", "prefix", "scopes", "agent", "created", "last used", "revoked")
        for k in items:
            table.add_row(
                k["id"], k["name"] or "", k["prefix"] + "…", ",".join(k["scopes"]),
                k["agent"] or "", _when(k["created_at"]), _when(k["last_used_at"]),
                _when(k["revoked_at"]),
            )  # fmt: skip
        console.print(table if items else "no API keys yet: `tether keys create --scopes admin`")

    @keys.command("revoke")
    def revoke(
        key_id: str = typer.Argument(..., help="The key's id (key_…)."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Revoke a key; servers stop accepting it within seconds."""
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import keys as key_store

                key_store.revoke_key(be.engine, key_id, actor=_actor())
            else:
                be.request("DELETE", f"/api/v1/keys/{key_id}")
        console.print(f"revoked {key_id}", highlight=False)


def _when(value: str | None) -> str:
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M") if value else ""
