"""`tether demo`: the self-contained tour (serve, seed realistic agent traffic, summarise)."""

from __future__ import annotations

from pathlib import Path

import typer

from tether.cli.output import console
from tether.config import load_settings


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        port: int = typer.Option(None, help="Port for the demo's tether (default 7337)."),
        home: Path = typer.Option(None, help="Where demo.db lives (default $TETHER_HOME)."),
        no_serve: bool = typer.Option(
            False, "--no-serve", help="Exit after seeding and the summary instead of serving."
        ),
        seed_only: bool = typer.Option(
            False,
            "--seed-only",
            help="Send the demo traffic to the tether at TETHER_URL (key TETHER_API_KEY); "
            "start nothing.",
        ),
        pace: float = typer.Option(
            0.25, min=0, help="Scale of the scripted latencies (0: as fast as possible)."
        ),
    ) -> None:
        """A guided tour on a fresh demo database: agents doing real work, a run killed by its
        budget, an email held for approval; then the console URL."""
        from tether.demo import run_demo
        from tether.demo import seed_only as seed

        if seed_only:
            settings = load_settings()
            seed(console, settings.url or f"http://127.0.0.1:{settings.port}", settings.api_key)
            return
        run_demo(console, home=home, port=port, keep_serving=not no_serve, pace=pace)
