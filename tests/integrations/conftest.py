"""One running `tether serve` per database (SQLite and PostgreSQL) for the whole package, with
an agent key and an admin client. Starting a server costs seconds on a loaded machine, so the
tests share it and keep apart by thread ids and agents of their own."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import Engine, create_engine, text

from tests.conftest import PG_URL, ServerProcess, _pg_schema_url
from tests.gateway.llm_env import MockServer
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade

# The mock LLM behind tether's gateway: a prompt with [[runaway]] gets a 3,000-token answer,
# one with [[tool]] a call of get_weather(city="Paris").
# The examples' replies (examples/mock_script.yaml) follow.
EXAMPLES = Path(__file__).parents[2] / "examples"
MOCK_SCRIPT = {"replies": [
    {"match": "[[runaway]]", "output_tokens": 3000},
    {"match": "[[tool]]", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
    *yaml.safe_load((EXAMPLES / "mock_script.yaml").read_text())["replies"],
]}  # fmt: skip


@dataclass
class Tether:
    url: str
    db: Engine
    agent_key: str
    admin_key: str
    admin: httpx.Client  # /api/v1 with the admin key
    mock: MockServer
    db_url: str

    def key(self, agent: str) -> str:
        return create_key(self.db, scopes="agent,ingest", agent=agent)[1]


@pytest.fixture(scope="package", params=["sqlite", "postgresql"])
def module_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('tether') / 'tether.db'}"
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


@pytest.fixture(scope="package")
def tether_api(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tether]:
    db = make_engine(module_db_url, pool_size=2)
    upgrade(db)
    _, admin_key = create_key(db, scopes="admin", name="test-admin")
    _, agent_key = create_key(db, scopes="agent,ingest", agent="lg-agent")
    mock = MockServer(MOCK_SCRIPT)
    home = Path(tmp_path_factory.mktemp("home"))
    cfg = home / "tether.yaml"
    cfg.write_text(yaml.safe_dump({"providers": [
        {"name": "mock", "base_url": mock.url + "/v1", "models": ["mock-small", "mock-large"],
         "max_retries": 0}],
        # the examples' tools, through the MCP gateway
        "mcp_servers": [{"name": "demo", "command": [
            sys.executable, "-m", "tether.gateway.mcp.demo_server"]}]}))  # fmt: skip
    # generous: eight engineers share two cores and a cold `tether serve` can take 20 s and more
    proc = ServerProcess(home / "data", module_db_url, config=cfg)
    admin = httpx.Client(
        base_url=proc.url + "/api/v1", timeout=30, headers={"Authorization": f"Bearer {admin_key}"}
    )
    try:
        yield Tether(proc.url, db, agent_key, admin_key, admin, mock, module_db_url)
    finally:
        admin.close()
        proc.stop()
        mock.stop()
        db.dispose()
