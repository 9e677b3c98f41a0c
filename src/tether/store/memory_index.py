"""Vector indexes for memory: pgvector (HNSW per namespace) on PostgreSQL, sqlite-vec beside the
SQLite file, or none (exact search over the namespace's rows with numpy).

An index is derived data: `memories.embedding` is the truth, every hit is re-checked against it in
SQL (namespace, user, liveness) before it is returned, and `rebuild` recreates the index from it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from sqlalchemy import Engine, select, text

from tether.core.errors import ConfigError
from tether.store.tables import memories

log = logging.getLogger("tether.memory")

IndexKind = Literal["auto", "exact", "sqlite-vec", "pgvector"]
# A namespace smaller than this is searched exactly inside PostgreSQL (fast enough, recall 1.0);
# a larger one gets an HNSW index of its own, so a namespace filter never starves the graph.
HNSW_MIN_ROWS = 5_000


class VectorIndex(Protocol):
    name: str

    def add(self, items: Sequence[tuple[str, str, bytes]]) -> None: ...
    def remove(self, ids: Sequence[str]) -> None: ...
    def knn(
        self, namespaces: Sequence[str], query: bytes, k: int
    ) -> list[tuple[str, float]] | None: ...
    def rebuild(self, engine: Engine) -> int: ...


def exact_top_k(query: bytes, rows: Sequence[tuple[str, bytes]], k: int) -> list[tuple[str, float]]:
    """Cosine top-k over unit vectors (a dot product); rows of another dimension are skipped."""
    if not rows:
        return []
    import numpy as np  # here, not at import: numpy costs a server that never searches ~15 MB

    q = np.frombuffer(query, dtype="<f4")
    width = q.nbytes
    usable = [(i, b) for i, b in rows if len(b) == width]
    if not usable:
        return []
    mat = np.frombuffer(b"".join(b for _, b in usable), dtype="<f4").reshape(len(usable), -1)
    scores = mat @ q
    k = min(k, len(usable))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top])]
    return [(usable[i][0], float(scores[i])) for i in top]


def _live_rows(engine: Engine, batch: int = 5000) -> Any:
    """Every live memory's (id, namespace, embedding), in id order, in batches."""
    last = ""
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(memories.c.id, memories.c.namespace, memories.c.embedding)
                .where(memories.c.superseded_at.is_(None), memories.c.embedding.is_not(None),
                       memories.c.id > last)
                .order_by(memories.c.id).limit(batch)
            ).all()  # fmt: skip
        if not rows:
            return
        yield [(r.id, r.namespace, bytes(r.embedding)) for r in rows]
        last = rows[-1].id


class SqliteVecIndex:
    """sqlite-vec's vec0 tables (one per dimension, the namespace a partition key) in a sidecar
    file: this Python's sqlite3 cannot load extensions, so apsw opens it. A separate file, because
    two SQLite libraries must never share one database file's locks."""

    name = "sqlite-vec"

    def __init__(self, path: Path) -> None:
        import apsw
        import sqlite_vec  # type: ignore[import-untyped]

        self.path = path
        self._lock = threading.Lock()
        self._conn = apsw.Connection(str(path))
        self._conn.enable_load_extension(True)
        self._conn.load_extension(sqlite_vec.loadable_path())
        self._conn.enable_load_extension(False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._dims: set[int] = {
            int(r[0][4:]) for r in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name GLOB 'vec_[0-9]*' "
                "AND name NOT LIKE '%\\_%\\_%' ESCAPE '\\'"
            )
        }  # fmt: skip

    def _table(self, dim: int) -> str:
        if dim not in self._dims:
            self._conn.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS vec_{dim} USING vec0(memory_id TEXT PRIMARY "
                f"KEY, namespace TEXT PARTITION KEY, embedding float[{dim}] distance_metric=cosine)"
            )
            self._dims.add(dim)
        return f"vec_{dim}"

    def add(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        self._insert(items, replace=True)

    def _insert(self, items: Sequence[tuple[str, str, bytes]], *, replace: bool) -> None:
        with self._lock, self._conn:
            for mem_id, ns, blob in items:
                table = self._table(len(blob) // 4)
                if replace:  # vec0 has no upsert
                    self._conn.execute(f"DELETE FROM {table} WHERE memory_id = ?", (mem_id,))
                self._conn.execute(
                    f"INSERT INTO {table}(memory_id, namespace, embedding) VALUES (?, ?, ?)",
                    (mem_id, ns, blob),
                )

    def remove(self, ids: Sequence[str]) -> None:
        with self._lock, self._conn:
            for dim in self._dims:
                for mem_id in ids:
                    self._conn.execute(f"DELETE FROM vec_{dim} WHERE memory_id = ?", (mem_id,))

    def knn(
        self, namespaces: Sequence[str], query: bytes, k: int
    ) -> list[tuple[str, float]] | None:
        dim = len(query) // 4
        if dim not in self._dims:
            return []
        out: list[tuple[str, float]] = []
        with self._lock:
            for ns in namespaces:
                rows = self._conn.execute(
                    f"SELECT memory_id, distance FROM vec_{dim} WHERE embedding MATCH ? AND k = ? "
                    "AND namespace = ? ORDER BY distance",
                    (query, k, ns),
                )
                out.extend((r[0], 1.0 - float(r[1])) for r in rows)
        out.sort(key=lambda x: -x[1])
        return out[:k]

    def rebuild(self, engine: Engine) -> int:
        with self._lock, self._conn:
            for dim in list(self._dims):
                self._conn.execute(f"DROP TABLE IF EXISTS vec_{dim}")
            self._dims.clear()
        n = 0
        for batch in _live_rows(engine):
            self._insert(batch, replace=False)  # the tables were just dropped: nothing to replace
            n += len(batch)
        return n

    def count(self) -> int:
        with self._lock:
            total = 0
            for d in self._dims:
                row = self._conn.execute(f"SELECT count(*) FROM vec_{d}").fetchone()
                total += int(row[0]) if row else 0
            return total


class PgVectorIndex:
    """pgvector in the same PostgreSQL: a table per dimension; a namespace past HNSW_MIN_ROWS gets
    a partial HNSW index of its own (cosine), smaller ones are scanned exactly."""

    name = "pgvector"

    def __init__(
        self, engine: Engine, *, ef_search: int = 100, hnsw_min_rows: int = HNSW_MIN_ROWS
    ) -> None:
        self.engine = engine
        self.ef_search = ef_search
        self.hnsw_min_rows = hnsw_min_rows
        self._lock = threading.Lock()
        self._indexed: set[tuple[int, str]] = set()
        # during a rebuild: the (dim, namespace) pairs to index once every row is in
        self._deferred: set[tuple[int, str]] | None = None
        with engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))

    @staticmethod
    def _vec(blob: bytes) -> str:
        import numpy as np

        return "[" + ",".join(f"{v:.7g}" for v in np.frombuffer(blob, dtype="<f4")) + "]"

    def _table(self, conn: Any, dim: int) -> str:
        conn.execute(text(
            f"CREATE TABLE IF NOT EXISTS vec_memories_{dim} (memory_id text PRIMARY KEY, "
            f"namespace text NOT NULL, embedding vector({dim}) NOT NULL)"
        ))  # fmt: skip
        conn.execute(text(
            f"CREATE INDEX IF NOT EXISTS vec_memories_{dim}_ns ON vec_memories_{dim} (namespace)"
        ))  # fmt: skip
        return f"vec_memories_{dim}"

    def add(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        by_dim: dict[int, list[dict[str, str]]] = {}
        for mem_id, ns, blob in items:
            by_dim.setdefault(len(blob) // 4, []).append(
                {"id": mem_id, "ns": ns, "v": self._vec(blob)}
            )
        with self.engine.begin() as conn:
            for dim, rows in by_dim.items():
                table = self._table(conn, dim)
                if self._deferred is not None:
                    _copy(conn, table, rows)  # a rebuild into empty tables: COPY, no conflicts
                    continue
                conn.execute(text(
                    f"INSERT INTO {table} (memory_id, namespace, embedding) VALUES "
                    "(:id, :ns, CAST(:v AS vector)) ON CONFLICT (memory_id) DO UPDATE SET "
                    "namespace = EXCLUDED.namespace, embedding = EXCLUDED.embedding"
                ), rows)  # fmt: skip
        if self._deferred is not None:
            self._deferred |= {(dim, r["ns"]) for dim, rows in by_dim.items() for r in rows}
            return
        for dim, rows in by_dim.items():
            for ns in {r["ns"] for r in rows}:
                self._maybe_hnsw(dim, ns)

    def _tables(self, conn: Any) -> list[str]:
        return list(conn.scalars(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename LIKE 'vec\\_memories\\_%' AND tablename NOT LIKE '%\\_ns'"
        )))  # fmt: skip

    def remove(self, ids: Sequence[str]) -> None:
        with self.engine.begin() as conn:
            for table in self._tables(conn):
                conn.execute(
                    text(f"DELETE FROM {table} WHERE memory_id = ANY(:ids)"), {"ids": list(ids)}
                )

    def _index_name(self, dim: int, ns: str) -> str:
        import hashlib

        return f"vec_hnsw_{dim}_{hashlib.sha1(ns.encode()).hexdigest()[:16]}"

    def _maybe_hnsw(self, dim: int, ns: str) -> None:
        if (dim, ns) in self._indexed:
            return
        with self._lock, self.engine.begin() as conn:
            n = conn.execute(text(
                f"SELECT count(*) FROM vec_memories_{dim} WHERE namespace = :ns"
            ), {"ns": ns}).scalar_one()  # fmt: skip
            if n < self.hnsw_min_rows:
                return
            literal = ns.replace("'", "''")
            # the build is memory-bound: give it room (the session's setting, not the server's)
            conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
            conn.execute(text(
                f"CREATE INDEX IF NOT EXISTS {self._index_name(dim, ns)} ON vec_memories_{dim} "
                f"USING hnsw (embedding vector_cosine_ops) WHERE namespace = '{literal}'"
            ))  # fmt: skip
            self._indexed.add((dim, ns))

    def knn(
        self, namespaces: Sequence[str], query: bytes, k: int
    ) -> list[tuple[str, float]] | None:
        dim = len(query) // 4
        q = self._vec(query)
        out: list[tuple[str, float]] = []
        with self.engine.begin() as conn:
            if f"vec_memories_{dim}" not in self._tables(conn):
                return []
            conn.execute(text(f"SET LOCAL hnsw.ef_search = {max(self.ef_search, k)}"))
            for ns in namespaces:
                rows = conn.execute(text(
                    f"SELECT memory_id, embedding <=> CAST(:q AS vector({dim})) AS d "
                    f"FROM vec_memories_{dim} WHERE namespace = :ns ORDER BY d LIMIT :k"
                ), {"q": q, "ns": ns, "k": k}).all()  # fmt: skip
                out.extend((r.memory_id, 1.0 - float(r.d)) for r in rows)
        out.sort(key=lambda x: -x[1])
        return out[:k]

    def rebuild(self, engine: Engine) -> int:
        """Reloads every live vector, then builds each large namespace's HNSW graph once (a
        bulk build is several times faster than inserting into a live graph)."""
        with self.engine.begin() as conn:
            for table in self._tables(conn):
                conn.execute(text(f"DROP TABLE {table}"))
        self._indexed.clear()
        self._deferred = set()
        n = 0
        try:
            for batch in _live_rows(engine):
                self.add(batch)
                n += len(batch)
        finally:
            pending, self._deferred = self._deferred, None
        for dim, ns in sorted(pending):
            self._maybe_hnsw(dim, ns)
        return n


def _copy(conn: Any, table: str, rows: Sequence[dict[str, str]]) -> None:
    """COPY FROM STDIN through psycopg: an order of magnitude faster than INSERTs for a rebuild."""
    raw = conn.connection.driver_connection
    with (
        raw.cursor() as cur,
        cur.copy(f"COPY {table} (memory_id, namespace, embedding) FROM STDIN") as copy,
    ):
        for r in rows:
            copy.write_row((r["id"], r["ns"], r["v"]))


def pgvector_available(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.scalar(text(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'"
        )))  # fmt: skip


def make_index(engine: Engine, kind: IndexKind = "auto") -> VectorIndex | None:
    """The index `kind` names; `auto` takes what this database can load, else none (exact)."""
    if kind == "exact":
        return None
    if engine.dialect.name == "postgresql":
        if kind == "sqlite-vec":
            raise ConfigError("memory.index sqlite-vec needs the SQLite store; use pgvector")
        if pgvector_available(engine):
            return PgVectorIndex(engine)
        if kind == "pgvector":
            raise ConfigError(
                "memory.index is pgvector but this PostgreSQL has no `vector` extension. Fix: "
                "install pgvector on the server, or set memory.index: exact"
            )
        log.info("pgvector is not installed: memory search is exact (fine to ~100k per namespace)")
        return None
    if kind == "pgvector":
        raise ConfigError("memory.index pgvector needs PostgreSQL; use sqlite-vec or exact")
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    try:
        return SqliteVecIndex(Path(f"{database}.vec"))
    except ImportError:
        if kind == "sqlite-vec":
            raise ConfigError(
                "memory.index sqlite-vec needs `pip install 'tether[memory]'` (apsw, sqlite-vec)"
            ) from None
        log.info("sqlite-vec is not installed: memory search is exact")
        return None
