"""The PostgreSQL work of the LLM gateway's budgeted path, measured in this process: CPU per budget
reserve (32 at once, on an agent's and the global day rows every call shares, and a run row, a
new run every 10 calls) and per gateway span (through the span writer, ~4,000 spans/s arriving).

    .venv/bin/python bench/gateway_store.py [--n 3000]

Prints reserves/s and microseconds of this process's CPU per reserve and per span (the span
figure includes building each span and queueing it). Nothing is written to bench/results: it
attributes bench/gateway.py's server CPU to the store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import PG_URL  # noqa: E402

from tether.core.budget import ScopeCap  # noqa: E402
from tether.core.records import RunAttribution, SpanRecord  # noqa: E402
from tether.gateway.llm.spans import SpanWriter  # noqa: E402
from tether.store import budgets, ingest  # noqa: E402
from tether.store.engine import make_engine  # noqa: E402
from tether.store.migrate import upgrade  # noqa: E402
from tether.store.pg_async import AsyncPG  # noqa: E402

USD = 10**9
CONCURRENCY = 32


async def reserves(pg: AsyncPG, engine: Engine, n: int) -> tuple[float, float]:
    async def worker(w: int) -> None:
        for i in range(n // CONCURRENCY):
            run = f"r{w}_{i // 10}"
            caps = [ScopeCap("agent_day:bench:2026-12-01", 10**6 * USD),
                    ScopeCap("global_day:2026-12-01", 10**7 * USD),
                    ScopeCap(f"run:{run}", 5 * USD, 10**6, 1000)]  # fmt: skip
            await budgets.reserve_async(
                pg, engine, caps, reservation_id=f"rsv_{uuid.uuid4().hex}", amount_nusd=1000,
                tokens=100, run_id=run, now=datetime.now(UTC), ttl_s=900,
            )  # fmt: skip

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    return time.perf_counter() - t0, time.process_time() - c0


async def spans(pg: AsyncPG, engine: Engine, n: int) -> tuple[float, int]:
    now = datetime.now(UTC)
    run_ids = [f"run_s{i}" for i in range(64)]
    with engine.begin() as conn:
        for r in run_ids:
            ingest.ensure_run(conn, r, trace_id=None, attribution=RunAttribution(agent="bench"),
                              started_at=now, source="gateway", now=now)  # fmt: skip
    writer = SpanWriter(engine, pg)
    c0 = time.process_time()
    async with writer.running():
        for i in range(n):
            r = run_ids[i % 64]
            writer.submit(SpanRecord(
                trace_id=uuid.uuid5(uuid.NAMESPACE_DNS, r).hex, span_id=f"{i:016x}", run_id=r,
                kind="llm", name="chat mock-small", started_at=now, ended_at=now,
                input='{"messages": [{"role": "user", "content": "hi there"}]}', output="hello",
                model="mock-small", input_tokens=20, output_tokens=10, cost_nusd=1234,
                status="ok", attributes={"gen_ai.system": "openai", "tether.key_id": "key_x"},
                attribution=RunAttribution(agent="bench"),
            ))  # fmt: skip
            if i % 8 == 7:
                await asyncio.sleep(0.002)
    return time.process_time() - c0, writer.written_fast


async def run(engine: Engine, n: int) -> None:
    pg = AsyncPG(engine.url)
    async with pg.lifespan():
        await reserves(pg, engine, n)  # warm: connections, prepared statements
        wall, cpu = await reserves(pg, engine, n)
        print(f"reserve, {n} at c={CONCURRENCY}: {n / wall:,.0f}/s, "
              f"{cpu * 1e6 / n:.0f} us CPU each (load {os.getloadavg()[0]:.1f})")  # fmt: skip
        cpu, fast = await spans(pg, engine, n)
        print(f"gateway spans, {n}: {cpu * 1e6 / n:.0f} us CPU each, {fast} by the fast path")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    schema = "bench_store_" + uuid.uuid4().hex[:8]
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(f"{PG_URL}?options=-csearch_path%3D{schema}")
    try:
        upgrade(engine)
        asyncio.run(run(engine, args.n))
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
