"""`tether keys create|list|revoke`: API keys, managed on the local store (that is how the
first key is made, before any key exists to call the API with)."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table
from sqlalchemy import Engine

from tether.cli.output import console, fail, print_json
from tether.config import load_settings
from tether.core.errors import BadRequestError, ConfigError, TetherError
from tether.store import keys as key_store
from tether.store.engine import make_engine
from tether.store.migrate import upgrade

DB_OPTION = typer.Option(None, "--database-url", help="SQLite or PostgreSQL URL.")


@contextmanager
def store(database_url: str | None) -> Iterator[Engine]:
    """The migrated local store; TetherErrors become one-line messages (usage errors exit 2)."""
    engine: Engine | None = None
    try:
        engine = make_engine(load_settings(database_url=database_url).db_url, pool_size=2)
        upgrade(engine)
        yield engine
    except (BadRequestError, ConfigError) as exc:
        fail(exc.message, 2)
    except TetherError as exc:
        fail(exc.message, 1)
    finally:
        if engine is not None:
            engine.dispose()


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
        secret_file: Path = typer.Option(
            None,
            "--secret-file",
            help="Import the secret in this "
            "file (e.g. a mounted Kubernetes Secret); a no-op when "
            "it is already a key.",
        ),
        database_url: str = DB_OPTION,
    ) -> None:
        """Create a key. The secret is printed this once; tether keeps only its hash."""
        imported = _read_secret(secret_file) if secret_file is not None else None
        with store(database_url) as engine:
            if imported is not None and (known := key_store.find_by_hash_of(engine, imported)):
                console.print(f"{known} already holds the secret in {secret_file}: nothing to do",
                              highlight=False)  # fmt: skip
                return
            key, secret = key_store.create_key(
                engine, scopes=scopes, agent=agent, name=name, actor=_actor(), secret=imported
            )
        if imported is not None:
            console.print(f"imported [bold]{key.id}[/] scopes={','.join(key.scopes)} from "
                          f"{secret_file}", highlight=False)  # fmt: skip
            return
        if as_json:
            print_json({"id": key.id, "key": secret})
            return
        console.print(f"created [bold]{key.id}[/] scopes={','.join(key.scopes)}"
                      + (f" agent={key.agent}" if key.agent else ""), highlight=False)  # fmt: skip
        console.print(secret, highlight=False, soft_wrap=True)
        console.print("[yellow]store the secret now: it is not shown again[/]")

    @keys.command("list")
    def list_(
        include_revoked: bool = typer.Option(False, "--all", help="Include revoked keys."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """List keys (never their secrets)."""
        with store(database_url) as engine:
            items = key_store.list_keys(engine, include_revoked=include_revoked)
        if as_json:
            print_json({"items": [k.to_dict() for k in items], "next_cursor": None})
            return
        table = Table("id", "name", "prefix", "scopes", "agent", "created", "last used", "revoked")
        for k in items:
            table.add_row(
                k.id, k.name or "", k.prefix + "…", ",".join(k.scopes), k.agent or "",
                _when(k.created_at), _when(k.last_used_at), _when(k.revoked_at),
            )  # fmt: skip
        console.print(table if items else "no API keys yet: `tether keys create --scopes admin`")

    @keys.command("revoke")
    def revoke(
        key_id: str = typer.Argument(..., help="The key's id (key_…)."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Revoke a key; servers stop accepting it within seconds."""
        with store(database_url) as engine:
            key = key_store.revoke_key(engine, key_id, actor=_actor())
        console.print(f"revoked {key.id}", highlight=False)


def _read_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        fail(f"{path}: cannot read the key secret ({exc.strerror}); mount the Secret there", 2)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else ""
