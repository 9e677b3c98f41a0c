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

from tests import xdist_units
from tests.processes import READY_TIMEOUT_S, Spawned, live_logs, stop_all
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


def wait_http(
    url: str, timeout: float = READY_TIMEOUT_S, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Waits until `url` answers below 500 (or `proc` exits), up to a bound generous enough for
    a loaded machine. Prefer `tests.processes.Spawned.wait_ready`, which also stops the process
    and shows what it printed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}:\n{out}")
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


class ServerProcess:
    """A `tether serve` subprocess on a free port; `.url`, `.env`, `.stop()`.

    Ready once /readyz answers below 500 (bounded by READY_TIMEOUT_S; /healthz answers sooner,
    while the app still loads behind the socket); if it does not, the process tree is stopped
    and the error shows what the server printed (also in `home/serve.log`).
    """

    def __init__(
        self,
        home: Path,
        database_url: str,
        extra_env: dict[str, str] | None = None,
        config: Path | None = None,
        workers: int = 1,
        ready_timeout: float = READY_TIMEOUT_S,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "TETHER_HOME": str(home),
            "TETHER_DATABASE_URL": database_url,
            "TETHER_PORT": str(self.port),
            "TETHER_LOG_LEVEL": "warning",
            # two workers' servers share PostgreSQL's 100 connections with everyone's tests (a
            # quiet run of the suite peaked at 88 with 4): at most 6 sync + 6 async + 1 each
            "TETHER_DB_POOL_SIZE": "2",
            **(extra_env or {}),
        }
        args = [sys.executable, "-m", "tether.cli.main", "serve", "--workers", str(workers)]
        if config is not None:
            args += ["--config", str(config)]
        self.spawned = Spawned(args, env=self.env, log_path=home / f"serve-{self.port}.log")
        self.proc = self.spawned.proc
        self.spawned.wait_ready(self.url + "/readyz", timeout=ready_timeout)

    def output(self) -> str:
        return self.spawned.output()

    def stop(self) -> None:
        self.spawned.stop()


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Iterator[ServerProcess]:
    """A running `tether serve` on the parametrised database."""
    proc = ServerProcess(tmp_path / "home", db_url)
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def _fresh_cli_consoles() -> Iterator[None]:
    """The CLI's Rich consoles are made on first use and keep the width COLUMNS gave then: each
    test's in-process commands (CliRunner, with its own environment) get consoles of their own,
    not those of whichever test ran before on this worker (xdist workers have COLUMNS=80)."""
    yield
    output = sys.modules.get("tether.cli.output")
    if output is not None:
        output.console._real = output.err_console._real = None


# `make test` runs on two xdist workers: tests/xdist_units.py says how the work is split
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    return xdist_units.Units(config, log) if config.getoption("dist") == "loadfile" else None


@pytest.hookimpl(trylast=True)  # after the fixtures' own reordering
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    xdist_units.check_shared(items)
    xdist_units.order(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """A failing test's report carries what its servers printed (their tracebacks: a 500 the
    test saw says only "see the server log"); its fixtures stop them right after."""
    report = yield
    if call.when == "call" and report.failed:  # type: ignore[attr-defined]
        for command, tail in live_logs():
            report.sections.append((f"output of {command}", tail))  # type: ignore[attr-defined]
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # whatever a failing test left running (servers, mock LLMs, MCP upstreams) ends with the run
    stop_all()
