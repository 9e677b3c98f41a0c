"""Shared fixtures: every store test runs on SQLite and on the real PostgreSQL.

`db_url` is parametrised over both; each PostgreSQL test gets a schema of its own, so
tests (and developers running them side by side) never see each other's rows.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text

from tether.config import Settings, load_settings
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade

PG_URL = os.environ.get("TETHER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TETHER_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _pg_schema_url(schema: str) -> str:
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database URL: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tether.db'}"
        return
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_schema_url(schema)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    """An Engine on a migrated empty database (SQLite and PostgreSQL)."""
    engine = make_engine(db_url, pool_size=5)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Engine]:
    """SQLite only, for tests about behaviour that does not depend on the database."""
    engine = make_engine(f"sqlite:///{tmp_path / 'tether.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return load_settings(home=tmp_path / "home", database_url=db_url)


@pytest.fixture
def admin_secret(db: Engine) -> str:
    _, secret = create_key(db, scopes="admin", name="test-admin")
    return secret


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode}:\n{out}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class ServerProcess:
    """A `tether serve` subprocess on a free port; `.url`, `.env`, `.stop()`."""

    def __init__(
        self,
        home: Path,
        database_url: str,
        extra_env: dict[str, str] | None = None,
        config: Path | None = None,
        workers: int = 1,
        ready_timeout_s: float = 20.0,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "TETHER_HOME": str(home),
            "TETHER_DATABASE_URL": database_url,
            "TETHER_PORT": str(self.port),
            "TETHER_LOG_LEVEL": "warning",
            **(extra_env or {}),
        }
        args = [sys.executable, "-m", "tether.cli.main", "serve", "--workers", str(workers)]
        if config is not None:
            args += ["--config", str(config)]
        self.proc = subprocess.Popen(
            args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        wait_http(self.url + "/healthz", timeout=ready_timeout_s, proc=self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Iterator[ServerProcess]:
    """A running `tether serve` on the parametrised database."""
    proc = ServerProcess(tmp_path / "home", db_url)
    yield proc
    proc.stop()
