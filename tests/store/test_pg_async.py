"""AsyncPG (store/pg_async.py) on the real PostgreSQL: one statement's first row on a kept
connection; a connection that died while idle is replaced without the caller noticing; a refused
statement raises and leaves the pool usable."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy import Engine, text

from tether.store.pg_async import AsyncPG


@pytest.fixture
def pg(db: Engine) -> AsyncPG:
    if db.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite runs the checkpoint statements inline")
    return AsyncPG(db.url, pool_size=2)


def test_first_rows_on_kept_connections(pg: AsyncPG, db: Engine) -> None:
    async def main() -> None:
        async with pg.lifespan():
            assert await pg.first("SELECT %(a)s::int + 1", {"a": 1}) == (2,)
            assert await pg.first("SELECT 1 WHERE false", {}) is None
            # the schema of the engine's URL (search_path in its options) is the one used
            with db.connect() as conn:
                schema = conn.execute(text("SELECT current_schema()")).scalar()
            assert await pg.first("SELECT current_schema()", {}) == (schema,)
            pid = await pg.first("SELECT pg_backend_pid()", {})
            assert await pg.first("SELECT pg_backend_pid()", {}) == pid  # reused
            with db.connect() as conn:  # the server drops it while idle
                conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid[0]})
            await asyncio.sleep(0.2)
            again = await pg.first("SELECT pg_backend_pid()", {})
            assert again is not None and again != pid
            with pytest.raises(psycopg.errors.DivisionByZero):
                await pg.first("SELECT 1 / %(z)s::int", {"z": 0})
            assert await pg.first("SELECT pg_backend_pid()", {}) == again  # still usable
            both = await asyncio.gather(
                *(pg.first("SELECT pg_sleep(0.05), 1", {}) for _ in range(4))
            )
            assert [row[1] for row in both] == [1, 1, 1, 1]
            assert len(pg._idle) <= pg.pool_size
        assert pg._idle == [] and not pg.ready

    asyncio.run(main())
