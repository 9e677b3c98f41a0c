"""Checkpoint latency: TetherSaver's `put` and `get_tuple` through tether's REST API, beside
LangGraph's own SqliteSaver and PostgresSaver, in the same run on the same checkpoints.

    .venv/bin/python bench/checkpoints.py [--n 500] [--pg]

The production path: a `tether serve` subprocess (SQLite; `--pg` adds PostgreSQL), an agent
key, a thread linked to a run with caps from the run config, checkpoints of a five-channel
state where each super-step changes two channels (as a LangGraph loop does), each put followed
by the task's pending writes. Prints p50/p99 per saver and operation; writes
bench/results/checkpoints.json. Target on SQLite through the API: put <= 3 ms, get_tuple
<= 10 ms (p50 / p99).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from record import Row, load, write  # noqa: E402
from tests.conftest import PG_URL, ServerProcess, _pg_schema_url  # noqa: E402

from tether.integrations.langgraph import TetherSaver  # noqa: E402
from tether.store.engine import make_engine  # noqa: E402
from tether.store.keys import create_key  # noqa: E402
from tether.store.migrate import upgrade  # noqa: E402

CHANNELS = ("task", "plan", "messages", "findings", "step")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def drive(saver: BaseCheckpointSaver[Any], n: int, caps: dict[str, Any]) -> dict[str, Any]:
    """n super-steps on one thread: put (two channels changed) + put_writes, then get_tuple."""
    thread = f"bench-{uuid.uuid4().hex[:10]}"
    config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": "", **caps}}
    cp = empty_checkpoint()
    versions: dict[str, Any] = {}
    values: dict[str, Any] = {
        "task": "Analyze Q4 variance report and flag anomalies",
        "plan": "",
        "messages": [],
        "findings": [],
        "step": 0,
    }
    put_ms: list[float] = []
    get_ms: list[float] = []
    for i in range(n):
        changed = ("step", CHANNELS[1 + i % 3]) if i else CHANNELS
        values["step"] = i
        values["messages"] = [*values["messages"][-20:], {"role": "assistant", "content": f"m{i}"}]
        values["findings"] = [*values["findings"][-10:], f"finding {i}"]
        values["plan"] = f"plan revision {i}"
        new = {ch: saver.get_next_version(versions.get(ch), None) for ch in changed}
        versions.update(new)
        cp = {
            **cp,
            "id": str(uuid6(clock_seq=i)),
            "ts": datetime.now(UTC).isoformat(),
            "channel_values": dict(values),
            "channel_versions": dict(versions),
        }
        t0 = time.perf_counter()
        config = saver.put(config, cp, {"source": "loop", "step": i, "parents": {}}, new)
        put_ms.append((time.perf_counter() - t0) * 1000)
        config["configurable"].update(caps)
        saver.put_writes(config, [("findings", f"finding {i + 1}")], f"task-{i}", "~plan")
        t0 = time.perf_counter()
        got = saver.get_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
        get_ms.append((time.perf_counter() - t0) * 1000)
        assert got is not None and got.checkpoint["id"] == cp["id"]
    return {
        "n": n,
        "put_p50_ms": round(statistics.median(put_ms), 3),
        "put_p99_ms": round(pct(put_ms, 0.99), 3),
        "get_tuple_p50_ms": round(statistics.median(get_ms), 3),
        "get_tuple_p99_ms": round(pct(get_ms, 0.99), 3),
    }


@contextmanager
def pg_schema() -> Iterator[str]:
    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def tether_saver(db_url: str, home: Path) -> Iterator[TetherSaver]:
    engine = make_engine(db_url, pool_size=2)
    upgrade(engine)
    _, key = create_key(engine, scopes="agent,ingest", agent="bench-agent")
    engine.dispose()
    proc = ServerProcess(home, db_url)
    try:
        saver = TetherSaver(proc.url, api_key=key, timeout_s=60)
        yield saver
        saver.close()
    finally:
        proc.stop()


def run_one(
    name: str, make: Callable[[], Iterator[Any]], n: int, caps: dict[str, Any]
) -> dict[str, Any]:
    gen = make()
    saver = next(gen)
    try:
        drive(saver, min(20, n), caps)  # warm-up: connections, caches, JIT-free but lazy imports
        out = drive(saver, n, caps)
    finally:
        for _ in gen:
            pass
    print(
        f"{name:34} put p50 {out['put_p50_ms']:7.2f} ms  p99 {out['put_p99_ms']:7.2f} ms   "
        f"get_tuple p50 {out['get_tuple_p50_ms']:7.2f} ms  p99 {out['get_tuple_p99_ms']:7.2f} ms"
    )
    return {"saver": name, **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="super-steps per saver")
    parser.add_argument("--pg", action="store_true", help="also PostgreSQL (tether and LangGraph)")
    args = parser.parse_args()
    load_before = load()
    caps = {"max_tokens": 50000, "max_iterations": 10**6, "cost_limit_usd": 2.0}
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-cp-"))
    results = []

    def tether_sqlite() -> Iterator[TetherSaver]:
        yield from tether_saver(f"sqlite:///{tmp / 'tether.db'}", tmp / "home")

    def lg_sqlite() -> Iterator[Any]:
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(tmp / "langgraph.db", check_same_thread=False)
        yield SqliteSaver(conn)
        conn.close()

    results.append(run_one("TetherSaver (API, SQLite)", tether_sqlite, args.n, caps))
    results.append(run_one("langgraph SqliteSaver (in-process)", lg_sqlite, args.n, {}))
    if args.pg:

        def tether_pg() -> Iterator[TetherSaver]:
            with pg_schema() as schema:
                yield from tether_saver(_pg_schema_url(schema), tmp / "home-pg")

        def lg_pg() -> Iterator[Any]:
            from langgraph.checkpoint.postgres import PostgresSaver
            from psycopg import Connection

            with pg_schema() as schema:
                dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
                with Connection.connect(
                    dsn, autocommit=True, options=f"-csearch_path={schema}"
                ) as conn:
                    saver = PostgresSaver(conn)  # type: ignore[arg-type]
                    saver.setup()
                    yield saver

        results.append(run_one("TetherSaver (API, PostgreSQL)", tether_pg, args.n, caps))
        results.append(run_one("langgraph PostgresSaver (in-process)", lg_pg, args.n, {}))
    rows = []
    for r in results:
        target = "p50 <= 3 ms, p99 <= 10 ms" if r["saver"] == "TetherSaver (API, SQLite)" else ""
        rows.append(
            Row(
                f"checkpoint put / get_tuple, {r['saver']}",
                f"put p50 {r['put_p50_ms']:.2f} / p99 {r['put_p99_ms']:.2f} ms; "
                f"get_tuple p50 {r['get_tuple_p50_ms']:.2f} / p99 "
                f"{r['get_tuple_p99_ms']:.2f} ms",
                target,
            )
        )
    command = (
        "bench/checkpoints.py"
        + (" --pg" if args.pg else "")
        + (f" --n {args.n}" if args.n != 500 else "")
    )
    write(
        "checkpoints",
        command=command,
        figures={"n": args.n, "results": results},
        rows=rows,
        load_before=load_before,
    )


if __name__ == "__main__":
    main()
