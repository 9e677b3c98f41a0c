"""Benchmark: vector memory at scale. N vectors of D dimensions in K namespaces, on pgvector (a real
PostgreSQL 16 from pgserver) and on sqlite-vec: index build time, recall@10 against exact search,
and query latency with a namespace filter, both through the store's whole search path (grant
check, index, SQL re-check of every hit, audit entry) and for the index alone.

Run: `.venv/bin/python bench/memory.py [--n 1000000] [--backend both|pgvector|sqlite-vec]`
(prints the figures, writes bench/results/memory.json). Targets on pgvector: recall@10 >= 0.95 and
p95 <= 20 ms. Vectors are clustered (a mixture of Gaussians, like real text embeddings, which are
far from uniform); the query set is held out from the data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import record
from record import Row, write
from sqlalchemy import Engine, insert

from tether.core.memory import Access
from tether.store import memory as mem
from tether.store.engine import make_engine, refresh_planner_stats
from tether.store.memory_index import PgVectorIndex, SqliteVecIndex, VectorIndex, exact_top_k
from tether.store.migrate import upgrade
from tether.store.tables import memories, memory_namespaces

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def clustered(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    pick = rng.integers(0, len(centres), n)
    # noise of norm ~0.8 around a unit centre: neighbours at cosine ~0.6, as text embeddings are
    x = centres[pick] + rng.normal(0, 0.8 / np.sqrt(dim), (n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype("<f4")


def load(engine: Engine, vectors: np.ndarray, namespaces: int) -> float:
    """Bulk rows into `memories` (the store's truth); the store's write path is timed apart."""
    t0 = time.perf_counter()
    with engine.begin() as conn:
        for k in range(namespaces):
            row = {"name": f"ns{k}", "embedder": "client", "dim": vectors.shape[1]}
            conn.execute(insert(memory_namespaces).values(**row, created_at=NOW))
    batch = 5000
    for start in range(0, len(vectors), batch):
        rows = [
            {"id": f"mem_{i:019d}", "namespace": f"ns{i % namespaces}", "text": f"memory {i}",
             "tags": [], "content_hash": f"{i:064x}", "embedding": vectors[i].tobytes(),
             "created_at": NOW}
            for i in range(start, min(start + batch, len(vectors)))
        ]  # fmt: skip
        with engine.begin() as conn:
            conn.execute(insert(memories), rows)
    return time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure(
    name: str, engine: Engine, index: VectorIndex, vectors: np.ndarray, queries: np.ndarray,
    namespaces: int, k: int,
) -> dict[str, Any]:  # fmt: skip
    t0 = time.perf_counter()
    index.rebuild(engine)
    build_s = time.perf_counter() - t0
    ops = Access(None, None)
    ids = [f"mem_{i:019d}" for i in range(len(vectors))]
    by_ns: dict[int, list[int]] = {}
    for i in range(len(vectors)):
        by_ns.setdefault(i % namespaces, []).append(i)
    recalls: list[float] = []
    full_ms: list[float] = []
    index_ms: list[float] = []
    cold_ms: list[float] = []
    for qi, q in enumerate(queries):  # first touch of each graph: pages come from disk or OS cache
        t = time.perf_counter()
        index.knn([f"ns{qi % namespaces}"], q.tobytes(), k)
        cold_ms.append((time.perf_counter() - t) * 1000)
    for qi, q in enumerate(queries):
        ns = qi % namespaces
        members = by_ns[ns]
        truth = exact_top_k(q.tobytes(), [(ids[i], vectors[i].tobytes()) for i in members], k)
        t = time.perf_counter()
        raw = index.knn([f"ns{ns}"], q.tobytes(), k) or []
        index_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        hits = mem.search(engine, ops, vector=q.tolist(), now=NOW, actor="bench",
                          namespaces=[f"ns{ns}"], k=k, index=index)  # fmt: skip
        full_ms.append((time.perf_counter() - t) * 1000)
        want = {i for i, _ in truth}
        recalls.append(len(want & {h.memory.id for h in hits}) / len(want))
        del raw
    out = {
        "backend": name,
        "build_s": round(build_s, 1),
        "recall_at_10": round(statistics.mean(recalls), 4),
        "search_p50_ms": round(pct(full_ms, 50), 2),
        "search_p95_ms": round(pct(full_ms, 95), 2),
        "index_p50_ms": round(pct(index_ms, 50), 2),
        "index_p95_ms": round(pct(index_ms, 95), 2),
        "index_first_pass_p95_ms": round(pct(cold_ms, 95), 2),
    }
    print(f"{name:>10}: build {out['build_s']} s, recall@{k} {out['recall_at_10']}, search p50 "
          f"{out['search_p50_ms']} / p95 {out['search_p95_ms']} ms (index alone p50 "
          f"{out['index_p50_ms']} / p95 {out['index_p95_ms']} ms; first pass p95 "
          f"{out['index_first_pass_p95_ms']} ms)", flush=True)  # fmt: skip
    return out


def write_path(engine: Engine, index: VectorIndex, dim: int, rng: np.random.Generator) -> float:
    """Writes per second through store.write (grant check, supersede lookup, audit, index)."""
    ops = Access(None, None)
    vecs = rng.normal(0, 1, (300, dim)).astype(np.float32)
    t0 = time.perf_counter()
    for i, v in enumerate(vecs):
        mem.write(engine, ops, namespace="writes", text=f"w{i}", embedding=v.tolist(), now=NOW,
                  actor="bench", key=f"k{i}", index=index)  # fmt: skip
    return len(vecs) / (time.perf_counter() - t0)


def start_pgvector(tmp: Path, shared_buffers: str) -> tuple[Any, str]:
    """A PostgreSQL 16 with pgvector from pgserver, with `shared_buffers` sized for the data
    (the graphs then stay in PostgreSQL's cache, as on a server tuned for this)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    server = pgserver.get_server(tmp, cleanup_mode="stop")
    server.psql(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}';")
    server.cleanup()  # a restart applies it
    server = pgserver.get_server(tmp, cleanup_mode="stop")
    url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    return server, url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--namespaces", type=int, default=10)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--backend", choices=["both", "pgvector", "sqlite-vec"], default="both")
    ap.add_argument("--shared-buffers", default="4GB", help="PostgreSQL's cache (25%% of RAM here)")
    args = ap.parse_args()
    load_before = record.load()
    rng = np.random.default_rng(42)
    centres = rng.normal(0, 1, (max(10, args.n // 1000), args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = clustered(args.n, args.dim, rng, centres)
    queries = clustered(args.queries, args.dim, rng, centres)
    print(f"{args.n:,} vectors x {args.dim} dims in {args.namespaces} namespaces, "
          f"{args.queries} held-out queries, k={args.k}", flush=True)  # fmt: skip
    results: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-memory-"))
    try:
        if args.backend in ("both", "pgvector"):
            server, url = start_pgvector(tmp / "pg", args.shared_buffers)
            try:
                engine = make_engine(url)
                upgrade(engine)
                loaded = load(engine, vectors, args.namespaces)
                print(f"  pgvector: rows loaded in {loaded:.1f} s", flush=True)
                index = PgVectorIndex(engine, ef_search=int(os.environ.get("EF_SEARCH", "100")))
                r = measure("pgvector", engine, index, vectors, queries, args.namespaces, args.k)
                r["writes_per_s"] = round(write_path(engine, index, args.dim, rng), 1)
                results.append(r)
                engine.dispose()
            finally:
                server.cleanup()
        if args.backend in ("both", "sqlite-vec"):
            db = tmp / "tether.db"
            engine = make_engine(f"sqlite:///{db}")
            upgrade(engine)
            loaded = load(engine, vectors, args.namespaces)
            refresh_planner_stats(engine)  # as `tether serve` does on SQLite (store_upkeep)
            print(f"  sqlite-vec: rows loaded in {loaded:.1f} s", flush=True)
            sv = SqliteVecIndex(Path(f"{db}.vec"))
            r = measure("sqlite-vec", engine, sv, vectors, queries, args.namespaces, args.k)
            r["writes_per_s"] = round(write_path(engine, sv, args.dim, rng), 1)
            results.append(r)
            engine.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures = {
        "n": args.n, "dim": args.dim, "namespaces": args.namespaces, "queries": args.queries,
        "k": args.k, "shared_buffers": args.shared_buffers, "results": results,
    }  # fmt: skip
    write("memory", command=command(args), figures=figures, rows=rows(args.n, results),
          load_before=load_before)  # fmt: skip


def command(args: argparse.Namespace) -> str:
    return "bench/memory.py" + ("" if args.n == 1_000_000 else f" --n {args.n}")


def rows(n: int, results: list[dict[str, Any]]) -> list[Row]:
    """README rows: the vector query with its namespace filter (the index), and the store's
    whole search path beside it (grant check, index, SQL re-check, audit entry)."""
    out = []
    for r in results:
        target = "recall@10 >= 0.95, p95 <= 20 ms" if r["backend"] == "pgvector" else ""
        out.append(Row(
            f"memory search, {n:,} x 384-d vectors in 10 namespaces, {r['backend']}",
            f"recall@10 {r['recall_at_10']}; namespace-filtered vector query p50 "
            f"{r['index_p50_ms']} / p95 {r['index_p95_ms']} ms; whole store search (grants, "
            f"re-check, audit) p50 {r['search_p50_ms']} / p95 {r['search_p95_ms']} ms; build "
            f"{r['build_s']:.0f} s",
            target,
        ))  # fmt: skip
    return out


if __name__ == "__main__":
    main()
