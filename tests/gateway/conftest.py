"""Fixtures of the LLM gateway tests: `tether serve` over the mock LLM, once per session, on
SQLite (one process) and on PostgreSQL + Redis (two processes sharing them)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import PG_URL, REDIS_URL
from tests.gateway.llm_env import LLMEnv, start_env, stop_env


@pytest.fixture(scope="session")
def llm_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMEnv]:
    """tether on SQLite; providers: the mock LLM (OpenAI and Anthropic), a flaky and a dead one."""
    tmp = tmp_path_factory.mktemp("llm-gateway")
    env = start_env(tmp, f"sqlite:///{tmp / 'tether.db'}")
    yield env
    stop_env(env)


def _pg_env(
    tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, str]
) -> Iterator[LLMEnv]:
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    started = start_env(tmp_path_factory.mktemp(name), url, workers=2, env=env)
    try:
        yield started
    finally:
        stop_env(started)
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def llm_env_pgsql(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMEnv]:
    """PostgreSQL with the budget counters in PostgreSQL too (no Redis), two processes."""
    yield from _pg_env(tmp_path_factory, "llm-gateway-pgsql", {})


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def ledger_env(request: pytest.FixtureRequest) -> LLMEnv:
    """The same server on each budget ledger: SQLite; PostgreSQL; PostgreSQL with Redis."""
    name = {"sqlite": "llm_env", "postgres": "llm_env_pgsql", "redis": "llm_env_pg"}
    env: LLMEnv = request.getfixturevalue(name[request.param])
    return env


@pytest.fixture(scope="session")
def llm_env_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMEnv]:
    """The same on a fresh PostgreSQL schema, served by `tether serve --workers 2`, with budget
    counters in Redis."""
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    env = start_env(tmp_path_factory.mktemp("llm-gateway-pg"),
                    f"{PG_URL}?options=-csearch_path%3D{schema}", workers=2,
                    env={"TETHER_REDIS_URL": REDIS_URL})  # fmt: skip
    try:
        yield env
    finally:
        stop_env(env)
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
