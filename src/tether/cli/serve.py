"""`tether serve`: migrate the database, then run the server with uvicorn.

The socket listens first: `/healthz` answers while the server's modules load and the database
is migrated behind it (server/starting.py), and `/readyz` says when all of that is done.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tether.cli.output import console, err_console, fail
from tether.config import Settings, load_settings
from tether.core.loopback import is_loopback

if TYPE_CHECKING:
    from starlette.types import ASGIApp


def prepare(settings: Settings) -> None:
    """Migrates, and refuses a non-loopback bind while no API key exists."""
    from tether.store import keys as key_store
    from tether.store.engine import make_engine
    from tether.store.migrate import upgrade

    engine = make_engine(settings.db_url)
    try:
        upgrade(engine)
        if not is_loopback(settings.host) and key_store.count_live_keys(engine) == 0:
            fail(
                f"refusing to listen on {settings.host} with no API key: anyone could reach "
                "tether. Create one first: `tether keys create --scopes admin`",
                2,
            )
    finally:
        engine.dispose()


def build_app(settings: Settings, *, migrate: bool) -> ASGIApp:
    """The real app (what server/starting.py builds behind the listening socket)."""
    if migrate:
        prepare(settings)
    from tether.server.app import create_app

    return create_app(settings)


# glibc malloc gives every thread that allocates an arena of its own (up to 8 per core), and each
# keeps the memory its thread freed: span ingest decodes and maps its batches on the worker
# threads, and their arenas held ~14 MB more at peak than two do (bench/ingest.py, peak RSS
# 156 -> 142 MB at the same spans/s). glibc's own setting (MALLOC_ARENA_MAX, GLIBC_TUNABLES)
# still wins: those belong to the C library, not to tether's settings.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt() parameter number


def limit_malloc_arenas() -> bool:
    """Caps glibc's malloc arenas for this process (call it before threads start). False where
    the C library is not glibc, or the operator set glibc's own variables."""
    if not sys.platform.startswith("linux"):
        return False
    if "MALLOC_ARENA_MAX" in os.environ or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, MALLOC_ARENAS) == 1)


def run_server(settings: Settings, *, workers: int = 1) -> None:
    import uvicorn

    from tether.server.starting import KEEP_ALIVE_S, Starting

    arenas_limited = limit_malloc_arenas()
    # A bind beyond loopback is refused before listening while no key exists: that check
    # needs the migrated database, so such a start migrates first.
    migrated = not is_loopback(settings.host)
    if migrated or workers > 1:
        prepare(settings)
        migrated = True
    console.print(
        f"[bold]tether[/] listening on http://{settings.host}:{settings.port}  "
        f"(database: {_describe(settings.db_url)})",
        highlight=False,
    )
    if workers > 1:
        # Worker processes rebuild their settings from the environment: hand them the flags.
        os.environ["TETHER_DATABASE_URL"] = settings.db_url
        os.environ["TETHER_HOME"] = str(settings.home)
        if settings.config is not None:
            os.environ["TETHER_CONFIG"] = str(settings.config)
        if arenas_limited:  # the workers are new processes: glibc reads this when they start
            os.environ["MALLOC_ARENA_MAX"] = str(MALLOC_ARENAS)
        _share_metrics(settings)
        uvicorn.run(
            "tether.server.wsgi:app",
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_level=settings.log_level,
            access_log=False,
            timeout_keep_alive=KEEP_ALIVE_S,
            factory=False,
        )
        return
    app = Starting(lambda: build_app(settings, migrate=not migrated))
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=settings.log_level, access_log=False,
                            timeout_keep_alive=KEEP_ALIVE_S)  # fmt: skip
    server = uvicorn.Server(config)

    def stop(exc: Exception) -> None:
        server.should_exit = True

    app.on_failure = stop
    server.run()
    if app.failure is not None:
        message = getattr(app.failure, "message", None) or repr(app.failure)
        err_console.print(f"[bold red]error:[/] tether failed to start: {message}", highlight=False)
        sys.exit(1)


def _share_metrics(settings: Settings) -> None:
    """Workers of one replica share one replica id (one metrics lease holder) and one
    prometheus_client multiprocess directory, fresh per start so no stale worker counts."""
    os.environ["TETHER_REPLICA_ID"] = settings.replica_id or f"{socket.gethostname()}:{os.getpid()}"
    base = settings.metrics_dir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix="tether-metrics-", dir=base))
    os.environ["TETHER_METRICS_DIR"] = str(fresh)
    # prometheus_client reads this when a worker imports it: values go to files in `fresh`
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(fresh)


def _describe(url: str) -> str:
    if url.startswith("sqlite"):
        return url.split("///", 1)[-1]
    return url.split("@")[-1]


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: str = typer.Option(None, help="Address to bind (default 127.0.0.1)."),
        port: int = typer.Option(None, help="Port to bind (default 7337)."),
        config: Path = typer.Option(None, "--config", "-c", help="tether.yaml to load."),
        database_url: str = typer.Option(None, help="SQLite or PostgreSQL URL."),
        workers: int = typer.Option(1, min=1, help="Server processes (they share the database)."),
    ) -> None:
        """Run the tether server (API, OTLP ingest, gateways, console)."""
        settings = load_settings(host=host, port=port, config=config, database_url=database_url)
        run_server(settings, workers=workers)
