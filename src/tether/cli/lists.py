"""`tether lists ls|show|set|add|remove|delete`: named lists in the registry (contacts, payees,
allowed domains) that policies use with `lists: {NAME: {registry: LIST}}`, on the backend of
cli/client.py (a running server with TETHER_URL, else the local store)."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from tether.cli.client import Local, opened
from tether.cli.output import DB_OPTION, console, errors, fail, print_json

VALUES = typer.Argument(None, help="Entries (emails, IBANs, domains, ids...).")
FILE = typer.Option(None, "--file", "-f", help="Read entries from a file, one a line.")


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _entries(values: list[str] | None, file: Path | None) -> list[str]:
    out = list(values or [])
    if file is not None:
        try:
            text = file.read_text()
        except OSError as exc:
            fail(f"cannot read {file}: {exc.strerror}", 2)
        out += [line.strip() for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip
    return out


def _show(found: dict[str, Any]) -> None:
    console.print(f"[bold]{found['name']}[/] v{found['version']}: {found['size']} entries "
                  f"(updated by {found['updated_by'] or '-'} at {found['updated_at']})",
                  highlight=False)  # fmt: skip
    if found.get("description"):
        console.print(found["description"], highlight=False, markup=False)
    for entry in found.get("entries", []):
        console.print(f"  {entry}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    lists_app = typer.Typer(help="Named lists in the registry: contacts, payees, domains.",
                            no_args_is_help=True)  # fmt: skip
    app.add_typer(lists_app, name="lists")

    @lists_app.command("ls")
    def ls_cmd(
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """List the registry's named lists with their sizes and versions."""
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import lists as store

                items = [n.to_dict(entries=False) for n in store.all_lists(be.engine)]
            else:
                items = be.request("GET", "/api/v1/lists")["items"]
        if as_json:
            print_json({"items": items})
            return
        table = Table("name", "entries", "version", "updated by", "updated at")
        for n in items:
            table.add_row(n["name"], str(n["size"]), str(n["version"]), n["updated_by"] or "",
                          n["updated_at"])  # fmt: skip
        console.print(table)

    @lists_app.command("show")
    def show_cmd(
        name: str = typer.Argument(..., help="The list's name."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Show one list with its entries."""
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import lists as store

                found = store.get_list(be.engine, name).to_dict()
            else:
                found = be.request("GET", f"/api/v1/lists/{name}")
        if as_json:
            print_json(found)
            return
        _show(found)

    @lists_app.command("set")
    def set_cmd(
        name: str = typer.Argument(..., help="The list's name."),
        values: list[str] = VALUES,
        file: Path = FILE,
        description: str = typer.Option(None, help="What the list is for."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Create a list, or replace all its entries (audited)."""
        entries = _entries(values, file)
        with errors(), opened(database_url, create=True) as be:
            if isinstance(be, Local):
                from tether.store import lists as store

                found = store.put_list(
                    be.engine,
                    name,
                    entries,
                    actor=_actor(),
                    now=datetime.now(UTC),
                    description=description,
                ).to_dict()
            else:
                found = be.request(
                    "PUT",
                    f"/api/v1/lists/{name}",
                    json={"entries": entries, "description": description},
                )
        if as_json:
            print_json(found)
            return
        console.print(f"list {name} v{found['version']}: {found['size']} entries")  # fmt: skip

    def _edit(name: str, add: list[str], remove: list[str], database_url: str | None,
              as_json: bool) -> None:  # fmt: skip
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import lists as store

                found = store.edit_list(
                    be.engine, name, add=add, remove=remove, actor=_actor(), now=datetime.now(UTC)
                ).to_dict()
            else:
                found = be.request(
                    "PATCH", f"/api/v1/lists/{name}", json={"add": add, "remove": remove}
                )
        if as_json:
            print_json(found)
            return
        console.print(f"list {name} v{found['version']}: {found['size']} entries")

    @lists_app.command("add")
    def add_cmd(
        name: str = typer.Argument(..., help="The list's name."),
        values: list[str] = VALUES,
        file: Path = FILE,
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Add entries to a list (audited)."""
        _edit(name, _entries(values, file), [], database_url, as_json)

    @lists_app.command("remove")
    def remove_cmd(
        name: str = typer.Argument(..., help="The list's name."),
        values: list[str] = VALUES,
        file: Path = FILE,
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Remove entries from a list (audited)."""
        _edit(name, [], _entries(values, file), database_url, as_json)

    @lists_app.command("delete")
    def delete_cmd(
        name: str = typer.Argument(..., help="The list's name."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Delete a list that no policy names (audited)."""
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import lists as store
                from tether.store import policies

                users = policies.agents_using_list(be.engine, name)
                store.delete_list(be.engine, name, actor=_actor(), now=datetime.now(UTC),
                                  used_by=users)  # fmt: skip
            else:
                be.request("DELETE", f"/api/v1/lists/{name}")
        console.print(f"deleted list {name}")
