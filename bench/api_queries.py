"""Benchmark: the run list (p50 <= 50 ms) and cost by day (<= 200 ms) at 100,000 runs and
1,000,000 spans, on SQLite and PostgreSQL, through the same functions the API uses.

Run: `.venv/bin/python bench/api_queries.py [--db sqlite|postgresql|both] [--runs N]`
(prints p50/p99 per query, writes bench/results/api_queries.json). Data: 20 agents x 3
versions, 50 users, 30 days, 10 spans per run, bulk-inserted straight into the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, insert, text

from tether.config import load_settings
from tether.server.app import create_app
from tether.store.costs import cost_breakdown, success_at_target
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.metrics import DecisionTally, read_ledger
from tether.store.migrate import upgrade
from tether.store.runs import RunFilters, list_runs, list_spans, span_tree
from tether.store.tables import runs, spans

PG_URL = os.environ.get("TETHER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 10, 26, tzinfo=UTC)
STATUSES = ["succeeded"] * 80 + ["failed"] * 12 + ["killed"] * 3 + ["running"] * 5
KINDS = ["agent", "llm", "tool", "llm", "tool", "llm", "retrieval", "llm", "tool", "llm"]
TARGETS_MS = {"runs_list_default": 50.0, "cost_by_day_30d": 200.0}


def seed(engine: Engine, n_runs: int, spans_per_run: int, rnd: random.Random) -> None:
    run_rows: list[dict[str, Any]] = []
    span_rows: list[dict[str, Any]] = []
    span_total = 30 * 86_400

    def flush() -> None:
        with engine.begin() as conn:
            if run_rows:
                conn.execute(insert(runs), run_rows)
            if span_rows:
                conn.execute(insert(spans), span_rows)
        run_rows.clear()
        span_rows.clear()

    for i in range(n_runs):
        trace = f"{rnd.getrandbits(128):032x}"
        started = T0 + timedelta(seconds=rnd.uniform(0, span_total))
        status = rnd.choice(STATUSES)
        ended = None if status == "running" else started + timedelta(seconds=rnd.uniform(1, 120))
        agent = f"agent-{rnd.randrange(20):02d}"
        costs = [rnd.randrange(10_000, 5_000_000) if KINDS[k % 10] == "llm" else 0
                 for k in range(spans_per_run)]  # fmt: skip
        run_rows.append({
            "id": f"run_{trace}", "trace_id": trace, "task_id": f"T-{rnd.randrange(20_000)}",
            "agent": agent, "version": f"v{rnd.randrange(3)}", "user": f"user{rnd.randrange(50)}",
            "status": status, "started_at": started, "ended_at": ended,
            "input": f"Classify invoice INV-{i}", "output": "approved",
            "input_tokens": 400 * spans_per_run, "output_tokens": 80 * spans_per_run,
            "cached_tokens": 0, "cost_nusd": sum(costs), "cost_unknown": False,
            "llm_calls": spans_per_run // 2, "tool_calls": spans_per_run // 3,
            "span_count": spans_per_run, "source": "otlp", "updated_at": started,
        })  # fmt: skip
        root = f"{rnd.getrandbits(64):016x}"
        for k in range(spans_per_run):
            s_start = started + timedelta(milliseconds=k * 50)
            kind = KINDS[k % 10]
            span_rows.append({
                "trace_id": trace, "span_id": root if k == 0 else f"{rnd.getrandbits(64):016x}",
                "parent_id": None if k == 0 else root, "run_id": f"run_{trace}", "kind": kind,
                "name": kind, "started_at": s_start,
                "ended_at": s_start + timedelta(milliseconds=40), "latency_ms": 40.0,
                "model": "gpt-4o-mini" if kind == "llm" else None,
                "input_tokens": 800 if kind == "llm" else None,
                "output_tokens": 160 if kind == "llm" else None,
                "cost_nusd": costs[k] if kind == "llm" else None, "cost_unknown": False,
                "status": "ok",
            })  # fmt: skip
        if len(run_rows) >= 2_000:
            flush()
    flush()
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()


def timed(fn: Callable[[], Any], rounds: int) -> dict[str, float]:
    fn()  # warm the cache
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return {"p50_ms": round(statistics.median(samples), 2), "p99_ms": round(p99, 2)}


def measure(engine: Engine, db_url: str, tmp: Path) -> dict[str, dict[str, float]]:
    deep: dict[str, str | None] = {"cursor": None}
    for _ in range(20):  # the cursor of page 21 (runs 1,001-1,050)
        deep["cursor"] = list_runs(engine, limit=50, cursor=deep["cursor"])[1]
    end = T0 + timedelta(days=30)
    _, secret = create_key(engine, scopes="read")
    client = TestClient(create_app(load_settings(home=tmp, database_url=db_url), engine=engine))
    auth = {"Authorization": f"Bearer {secret}"}
    some_run = list_runs(engine, limit=1)[0][0]["id"]
    cases: dict[str, Callable[[], Any]] = {
        "runs_list_default": lambda: list_runs(engine, limit=50),
        "runs_list_api_http": lambda: client.get("/api/v1/runs", headers=auth).raise_for_status(),
        "runs_list_page_21": lambda: list_runs(engine, limit=50, cursor=deep["cursor"]),
        "runs_list_agent": lambda: list_runs(engine, RunFilters(agent="agent-07"), limit=50),
        "runs_list_failed": lambda: list_runs(engine, RunFilters(status="failed"), limit=50),
        "runs_list_user": lambda: list_runs(engine, RunFilters(user="user7"), limit=50),
        "runs_list_min_cost": lambda: list_runs(
            engine, RunFilters(min_cost_usd=Decimal("0.02")), limit=50),
        "runs_list_by_cost": lambda: list_runs(engine, sort="-cost", limit=50),
        "runs_list_search": lambda: list_runs(engine, RunFilters(q="T-1234"), limit=50),
        "run_span_tree": lambda: span_tree(engine, some_run),
        "spans_list_newest": lambda: list_spans(engine, limit=100),
        "spans_list_llm": lambda: list_spans(engine, kind="llm", limit=100),
        "cost_by_day_30d": lambda: cost_breakdown(engine, "day", start=T0, end=end),
        "cost_by_agent_30d": lambda: cost_breakdown(engine, "agent", start=T0, end=end),
        "kpi_30d": lambda: success_at_target(engine, start=T0, end=end),
        "metrics_aggregate": lambda: read_ledger(engine, DecisionTally(), now=end),
    }  # fmt: skip
    out = {}
    for name, fn in cases.items():
        out[name] = timed(fn, 30 if name.startswith(("runs_list", "spans_list")) else 10)
        print(f"  {name:22s} p50 {out[name]['p50_ms']:8.2f} ms  p99 {out[name]['p99_ms']:8.2f} ms")
    return out


def run_one(dialect: str, n_runs: int, spans_per_run: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    schema = None
    if dialect == "sqlite":
        url = f"sqlite:///{tmp / 'bench.db'}"
    else:
        schema = "bench_" + uuid.uuid4().hex[:10]
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        t = time.perf_counter()
        seed(engine, n_runs, spans_per_run, random.Random(7))
        print(f"{dialect}: seeded {n_runs:,} runs / {n_runs * spans_per_run:,} spans "
              f"in {time.perf_counter() - t:.0f}s")  # fmt: skip
        results = measure(engine, url, tmp)
    finally:
        engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
        if schema is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    passed = all(results[k]["p50_ms"] <= v for k, v in TARGETS_MS.items())
    return {"runs": n_runs, "spans": n_runs * spans_per_run, "queries": results,
            "targets_p50_ms": TARGETS_MS, "passed": passed}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--spans-per-run", type=int, default=10)
    args = parser.parse_args()
    dialects = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    report: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    for d in dialects:
        report[d] = run_one(d, args.runs, args.spans_per_run)
    out = Path(__file__).parent / "results" / "api_queries.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    ok = all(report[d]["passed"] for d in dialects)
    print(f"{'PASS' if ok else 'FAIL'}: targets p50 {TARGETS_MS}; wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
