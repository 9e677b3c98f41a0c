"""Approval latency: from a person's decision to the held MCP call's result at the agent.

    .venv/bin/python bench/approvals.py [--rounds 20] [--pg]

Starts `tether serve` with tether's demo MCP server and a policy that holds demo.send_email,
then, per round, an agent (the official MCP client) calls it and the call is approved either
through the API of the same server (an in-process wake) or by another process writing the
decision to the store (as `tether approvals approve` does; the server polls every 50 ms).
Prints p50/p95/max per path of (a) decision -> call forwarded upstream (the server's own
measure, `forwarded_after_ms` in the tool span) and (b) decision -> result at the agent;
writes bench/results/approvals.json. Target: (a) <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import PG_URL, ServerProcess  # noqa: E402
from tests.gateway.mcp.conftest import (  # noqa: E402
    make_repo,
    mcp_client,
    prepare_store,
    write_config,
)

from tether.store import approvals  # noqa: E402
from tether.store.engine import make_engine  # noqa: E402
from tether.store.tables import spans  # noqa: E402

ARGS = {"to": "ada@example.com", "subject": "Invoice", "body": "Attached."}


def forwarded_after_ms(engine: Any, run_id: str) -> float:
    """The server's own measure: decision committed -> call forwarded upstream."""
    with engine.connect() as conn:
        attrs = conn.execute(select(spans.c.attributes).where(
            spans.c.run_id == run_id, spans.c.kind == "tool")).scalar_one()  # fmt: skip
    return float(attrs["tether.decision"]["approval"]["forwarded_after_ms"])


async def one_round(
    server: ServerProcess, keys: dict[str, str], engine: Any, via: str
) -> tuple[float, float]:
    run_id = "run_" + uuid.uuid4().hex[:20]
    got: dict[str, float] = {}
    async with mcp_client(server.url, keys["triage"], run_id) as client:

        async def call() -> None:
            result = await client.call_tool("demo.send_email", ARGS)
            got["at"] = time.perf_counter()
            assert not result.is_error, result

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            held = None
            while held is None:
                found = approvals.list_approvals(engine, status="pending", run_id=run_id)
                held = found[0] if found else None
                await anyio.sleep(0.01)
            if via == "api":
                decided = time.perf_counter()  # counted from the moment the request is sent
                async with httpx.AsyncClient() as http:
                    r = await http.post(
                        f"{server.url}/api/v1/approvals/{held.id}/approve",
                        headers={"Authorization": f"Bearer {keys['admin']}"},
                    )
                    r.raise_for_status()
            else:
                await anyio.to_thread.run_sync(lambda: approvals.decide(
                    engine, held.id, approve=True, actor="bench", reason=None,
                    now=datetime.now(UTC)))  # fmt: skip
                decided = time.perf_counter()  # counted from the commit
    forwarded = await anyio.to_thread.run_sync(forwarded_after_ms, engine, run_id)
    return forwarded, (got["at"] - decided) * 1000


def summarise(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 1),
        "max_ms": round(ordered[-1], 1),
        "rounds": len(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    opts = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="tether-bench-approvals-"))
    if opts.pg:
        from sqlalchemy import create_engine, text

        schema = "bench_" + uuid.uuid4().hex[:8]
        with create_engine(PG_URL, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        db_url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    else:
        db_url = f"sqlite:///{base / 'tether.db'}"
    keys = prepare_store(db_url)
    server = ServerProcess(
        base / "home", db_url, config=write_config(base / "tether.yaml", make_repo(base / "repo"))
    )
    engine = make_engine(db_url)
    results: dict[str, Any] = {}
    try:
        for via in ("api", "store"):
            pairs = [anyio.run(one_round, server, keys, engine, via) for _ in range(opts.rounds)]
            for label, ms in (("forwarded", [p[0] for p in pairs]),
                              ("result_at_agent", [p[1] for p in pairs])):  # fmt: skip
                r = results[f"{via}.{label}"] = summarise(ms)
                print(
                    f"decision via {via:5} -> {label:15}: p50 {r['p50_ms']:6.1f} ms  "
                    f"p95 {r['p95_ms']:6.1f} ms  max {r['max_ms']:6.1f} ms"
                )
    finally:
        server.stop()
        engine.dispose()
        if opts.pg:
            from sqlalchemy import create_engine, text

            with create_engine(PG_URL, isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    out = {
        "benchmark": "approval_to_forwarded_result",
        "database": "postgresql" if opts.pg else "sqlite",
        "target_ms": 100,
        "results": results,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "at": datetime.now(UTC).isoformat(),
    }
    path = ROOT / "bench" / "results" / "approvals.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
