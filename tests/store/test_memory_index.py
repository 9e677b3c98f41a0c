"""The vector indexes agree with exact search and never widen what a query may see:
sqlite-vec beside SQLite, pgvector on a real PostgreSQL 16 (pgserver; the local 15 has none)."""

from __future__ import annotations

import random
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, make_url, text

from tether.core.memory import Access
from tether.store import memory as mem
from tether.store.engine import make_engine
from tether.store.memory_index import PgVectorIndex, SqliteVecIndex, VectorIndex, make_index
from tether.store.migrate import upgrade

NOW = datetime(2026, 12, 1, tzinfo=UTC)
OPS = Access(None, None)
DIM = 16


@pytest.fixture(scope="session")
def pgvector_url() -> Iterator[str]:
    """A real PostgreSQL 16 with pgvector (run as its own user when we are root, so its data
    directory lives outside pytest's private tmp)."""
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (true on CI) when pgserver imports
        warnings.simplefilter("ignore")
        import pgserver

    data = Path(tempfile.mkdtemp(prefix="tether-pgvector-"))
    server = pgserver.get_server(data, cleanup_mode="stop")
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(params=["sqlite-vec", "pgvector"])
def indexed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, VectorIndex]]:
    if request.param == "sqlite-vec":
        engine = make_engine(f"sqlite:///{tmp_path / 't.db'}")
        upgrade(engine)
        index: VectorIndex = SqliteVecIndex(tmp_path / "t.db.vec")
    else:
        url = request.getfixturevalue("pgvector_url")
        schema = f"m_{random.getrandbits(40):x}"
        admin = make_engine(url)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public"))
        admin.dispose()
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema},public"})
        engine = make_engine(scoped.render_as_string(hide_password=False))
        upgrade(engine)
        index = PgVectorIndex(engine, hnsw_min_rows=50)
    yield engine, index
    engine.dispose()


def _vec(rng: random.Random) -> list[float]:
    return [rng.gauss(0, 1) for _ in range(DIM)]


def _fill(engine: Engine, index: VectorIndex, n: int, rng: random.Random) -> None:
    for i in range(n):
        mem.write(engine, OPS, namespace=f"ns{i % 3}", text=f"t{i}", embedding=_vec(rng), now=NOW,
                  actor="admin", key=f"k{i}", index=index)  # fmt: skip


def test_index_matches_exact_search(indexed: tuple[Engine, VectorIndex]) -> None:
    engine, index = indexed
    rng = random.Random(7)
    _fill(engine, index, 240, rng)
    agreed = 0
    for _ in range(10):
        q = _vec(rng)
        got = mem.search(engine, OPS, vector=q, now=NOW, actor="t", namespaces=["ns1"], k=10,
                         index=index)  # fmt: skip
        want = mem.search(engine, OPS, vector=q, now=NOW, actor="t", namespaces=["ns1"], k=10)
        assert all(h.memory.namespace == "ns1" for h in got)
        agreed += len({h.memory.id for h in got} & {h.memory.id for h in want})
    assert agreed / 100 >= 0.9  # HNSW is approximate; sqlite-vec is exact (1.0)


def test_superseded_and_forgotten_leave_the_index(indexed: tuple[Engine, VectorIndex]) -> None:
    engine, index = indexed
    rng = random.Random(3)
    v = _vec(rng)
    old = mem.write(engine, OPS, namespace="ns0", text="old", embedding=v, now=NOW, actor="a",
                    key="fact", index=index)  # fmt: skip
    mem.write(engine, OPS, namespace="ns0", text="new", embedding=v, now=NOW, actor="a",
              key="fact", index=index)  # fmt: skip
    ranked = index.knn(["ns0"], mem.rules.encode_vector(v), 5) or []
    assert old.memory.id not in [i for i, _ in ranked]
    hits = mem.search(engine, OPS, vector=v, now=NOW, actor="t", namespaces=["ns0"], index=index)
    assert [h.memory.text for h in hits] == ["new"]
    mem.forget(engine, OPS, now=NOW, actor="a", memory_id=hits[0].memory.id, index=index)
    assert mem.search(engine, OPS, vector=v, now=NOW, actor="t", namespaces=["ns0"],
                      index=index) == []  # fmt: skip


def test_rebuild_recreates_the_index_from_the_store(indexed: tuple[Engine, VectorIndex]) -> None:
    engine, index = indexed
    rng = random.Random(5)
    _fill(engine, index, 30, rng)
    assert index.rebuild(engine) == 30
    q = _vec(rng)
    hits = mem.search(engine, OPS, vector=q, now=NOW, actor="t", namespaces=["ns2"], index=index)
    assert len(hits) == 10


def test_agent_scope_is_enforced_on_index_hits(indexed: tuple[Engine, VectorIndex]) -> None:
    engine, index = indexed
    rng = random.Random(9)
    v = _vec(rng)
    mem.write(engine, OPS, namespace="agent-a", text="a only", embedding=v, now=NOW, actor="a",
              index=index)  # fmt: skip
    mem.write(engine, OPS, namespace="agent-b", text="b's", embedding=v, now=NOW, actor="a",
              user="bob", index=index)  # fmt: skip
    b = Access("agent-b", "agent-b")
    assert mem.search(engine, b, vector=v, now=NOW, actor="b", index=index) == []
    hits = mem.search(engine, b, vector=v, now=NOW, actor="b", user="bob", index=index)
    assert [h.memory.text for h in hits] == ["b's"]


def test_make_index_picks_what_the_database_can_load(tmp_path: Path, db: Engine) -> None:
    chosen = make_index(db)
    if db.dialect.name == "sqlite":
        assert chosen is not None and chosen.name == "sqlite-vec"
    else:
        assert chosen is None  # the local PostgreSQL 15 has no pgvector: exact search
    assert make_index(db, "exact") is None
