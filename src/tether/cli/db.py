"""`tether db upgrade|current`: database migrations."""

from __future__ import annotations

import typer

from tether.cli.output import console
from tether.config import load_settings
from tether.store.engine import make_engine
from tether.store.migrate import current_revision, head_revision, upgrade


def register(app: typer.Typer) -> None:
    db = typer.Typer(help="Database migrations.", no_args_is_help=True)
    app.add_typer(db, name="db")

    @db.command("upgrade")
    def upgrade_cmd(
        database_url: str = typer.Option(None, help="SQLite or PostgreSQL URL."),
    ) -> None:
        """Apply every pending migration."""
        settings = load_settings(database_url=database_url)
        engine = make_engine(settings.db_url)
        before = current_revision(engine)
        after = upgrade(engine)
        if before == after:
            console.print(f"database already at revision {after}")
        else:
            console.print(f"database upgraded from {before or 'empty'} to {after}")

    @db.command("current")
    def current_cmd(
        database_url: str = typer.Option(None, help="SQLite or PostgreSQL URL."),
    ) -> None:
        """Show the database's revision and the newest one."""
        settings = load_settings(database_url=database_url)
        engine = make_engine(settings.db_url)
        console.print(f"current: {current_revision(engine) or 'empty'}  head: {head_revision()}")
