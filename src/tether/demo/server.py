"""Runs tether (and the mock LLM behind its gateway) inside the demo process: uvicorn in a
background thread on a fresh SQLite database, `$TETHER_HOME/demo.db`, wiped on every start."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from tether.config import ProviderConfig, Settings, load_settings
from tether.core.errors import ConfigError
from tether.server.starting import KEEP_ALIVE_S
from tether.store import keys as key_store
from tether.store.engine import make_engine
from tether.store.migrate import upgrade

DEMO_DB = "demo.db"
MOCK_MODELS = ["mock-small", "mock-large"]


class ThreadedServer:
    """uvicorn serving `app` on host:port from a daemon thread; `stop()` shuts it down."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            ws="none",
            timeout_keep_alive=KEEP_ALIVE_S,
            # a held approval's long poll must not hold up Ctrl-C
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        # uvicorn leaves signals alone off the main thread: Ctrl-C stays the demo's
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive():
                raise ConfigError(f"could not serve on {host}:{port} (is the port in use?)")
            if time.monotonic() > deadline:
                raise ConfigError(f"the server on {host}:{port} did not start within 30s")
            time.sleep(0.02)

    def stop(self) -> None:
        # the held approval's long poll is cancelled on purpose; uvicorn would log it as an error
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class LocalTether:
    """The demo's own tether: its URL, settings, an admin key, and the servers to stop."""

    url: str
    settings: Settings
    admin_key: str
    mock_llm_url: str
    servers: list[ThreadedServer]
    # the demo MCP server's live descriptions (writing it changes a tool: the rug pull)
    descriptions_file: Path | None = None

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


def wipe(home: Path) -> Path:
    """Deletes the previous demo database (and its WAL files); returns its path."""
    home.mkdir(parents=True, exist_ok=True)
    db = home / DEMO_DB
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    return db


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start(home: Path | None, port: int | None, host: str = "127.0.0.1") -> LocalTether:
    """Starts the mock LLM and tether on a wiped demo database; creates the demo's admin key."""
    from tether.demo.frameworks import mock_script
    from tether.gateway.llm.mock import create_mock_app
    from tether.gateway.mcp.demo import demo_server_config
    from tether.server.app import create_app

    base = load_settings(home=home)
    db = wipe(base.home)
    descriptions = base.home / "demo-mcp-descriptions.json"
    descriptions.write_text("{}")
    mock_port = free_port(host)
    # the examples' replies (examples/mock_script.yaml) when run from a source checkout
    mock = ThreadedServer(create_mock_app(mock_script()), host, mock_port)
    mock_url = f"http://{host}:{mock_port}"
    provider = ProviderConfig(
        name="mock", kind="openai", base_url=f"{mock_url}/v1", models=MOCK_MODELS
    )
    settings = load_settings(
        home=base.home,
        host=host,
        port=port or base.port,
        database_url=f"sqlite:///{db}",
        providers=[provider],
        # tether's demo MCP server (demo/mcp_governed.py)
        mcp_servers=[demo_server_config(descriptions_file=descriptions)],
    )
    engine = make_engine(settings.db_url)
    try:
        upgrade(engine)
        _, admin_key = key_store.create_key(engine, scopes="admin", name="demo-admin")
    finally:
        engine.dispose()
    try:
        server = ThreadedServer(create_app(settings), host, settings.port)
    except ConfigError:
        mock.stop()
        raise
    url = f"http://{host}:{settings.port}"
    return LocalTether(url, settings, admin_key, mock_url, [mock, server], descriptions)
