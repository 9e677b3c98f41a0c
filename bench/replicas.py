"""Scale-out: LLM gateway throughput through haproxy with 1, 2 and 3 `tether serve` replicas on
one PostgreSQL and Redis (the production path: an agent key whose policy has a run and a day
budget, a run per task), and OTLP ingest spans/s with 3 replicas.

    .venv/bin/python bench/replicas.py [--requests 600] [--concurrency 24] [--batches 120]

Prints the figures and the scaling factor over one replica; writes bench/results/replicas.json.
On a 2-core machine the replicas share the same two cores (and PostgreSQL, Redis, the mock LLM
and the load generator run there too), so the factor measures contention, not capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.gateway.llm_env import MAIN_SCRIPT, UPSTREAM_KEY, MockServer  # noqa: E402
from tests.ops.cluster import Cluster, pg_schema  # noqa: E402
from tests.ops.traffic import otlp_body  # noqa: E402

from tether.store.keys import create_key  # noqa: E402
from tether.store.policies import apply_policy  # noqa: E402

POLICY = "agent: bench\nbudgets:\n  run: {max_cost_usd: 1}\n  day: {max_cost_usd: 100000}\n"


async def _drive(url: str, n: int, concurrency: int, make: Any) -> float:
    """Requests per second for n requests at the given concurrency (all must succeed)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        todo = iter(range(n))

        async def worker() -> None:
            for i in todo:
                method, path, kw = make(i)
                r = await client.request(method, path, **kw)
                if r.status_code != 200:
                    raise RuntimeError(f"{path}: HTTP {r.status_code}: {r.text[:200]}")

        await asyncio.gather(*(worker() for _ in range(min(4, concurrency))))  # warm up
        todo = iter(range(n))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - t0)


def gateway_rps(n_replicas: int, args: argparse.Namespace, mock: MockServer) -> float:
    tmp = Path(tempfile.mkdtemp(prefix=f"tether-bench-r{n_replicas}-"))
    db_url, drop = pg_schema()
    config = {
        "providers": [
            {
                "name": "mock",
                "base_url": mock.url + "/v1",
                "api_key_env": "MOCK_UPSTREAM_KEY",
                "models": ["mock-small"],
            }
        ]
    }
    cluster = Cluster(tmp, db_url, config, n=n_replicas, env={
        "MOCK_UPSTREAM_KEY": UPSTREAM_KEY, "TETHER_LOG_LEVEL": "warning"})  # fmt: skip
    try:
        cluster.start()
        assert cluster.engine is not None
        apply_policy(cluster.engine, POLICY, "bench", datetime.now(UTC))
        key = create_key(cluster.engine, scopes="agent", agent="bench")[1]
        headers = {"authorization": f"Bearer {key}"}

        def make(i: int) -> tuple[str, str, dict[str, Any]]:
            return ("POST", "/llm/v1/chat/completions", {
                "headers": {**headers, "x-tether-run-id": f"run_bench_{n_replicas}_{i}"},
                "json": {"model": "mock-small", "max_tokens": 16,
                         "messages": [{"role": "user", "content": "triage ticket"}]}})  # fmt: skip

        return asyncio.run(_drive(cluster.url, args.requests, args.concurrency, make))
    finally:
        cluster.stop()
        drop()


def ingest_spans_per_s(args: argparse.Namespace, mock: MockServer) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-ingest-"))
    db_url, drop = pg_schema()
    cluster = Cluster(tmp, db_url, {}, n=3, env={"TETHER_LOG_LEVEL": "warning"})
    try:
        cluster.start()
        assert cluster.engine is not None
        key = create_key(cluster.engine, scopes="ingest")[1]
        spans_per_batch = args.spans_per_batch

        def make(i: int) -> tuple[str, str, dict[str, Any]]:
            body = otlp_body()
            spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]  # type: ignore[index]
            root = spans[0]
            for j in range(spans_per_batch - len(spans)):
                spans.append(
                    {**spans[1], "spanId": f"{i:08x}{j:08x}", "parentSpanId": root["spanId"]}
                )
            return (
                "POST",
                "/v1/traces",
                {"json": body, "headers": {"authorization": f"Bearer {key}"}},
            )

        rps = asyncio.run(_drive(cluster.url, args.batches, args.concurrency, make))
        return rps * spans_per_batch
    finally:
        cluster.stop()
        drop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=600)
    p.add_argument("--concurrency", type=int, default=24)
    p.add_argument("--batches", type=int, default=120)
    p.add_argument("--spans-per-batch", type=int, default=50)
    args = p.parse_args()
    mock = MockServer(MAIN_SCRIPT, api_key=UPSTREAM_KEY)
    try:
        rps = {n: gateway_rps(n, args, mock) for n in (1, 2, 3)}
        ingest = ingest_spans_per_s(args, mock)
    finally:
        mock.stop()
    scaling = {n: rps[n] / rps[1] for n in rps}
    for n in (1, 2, 3):
        print(f"gateway, {n} replica(s): {rps[n]:8.1f} req/s  (x{scaling[n]:.2f} of one)")
    print(f"ingest, 3 replicas:    {ingest:8.0f} spans/s")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    out = {
        "benchmark": "replicas",
        "path": "chat completions through haproxy, agent key with run and day budgets, a run per "
                "request, PostgreSQL + Redis shared by the replicas",
        "requests": args.requests, "concurrency": args.concurrency,
        "gateway_rps": {str(n): round(v, 1) for n, v in rps.items()},
        "scaling_factor": {str(n): round(v, 2) for n, v in scaling.items()},
        "ingest_spans_per_s_3_replicas": round(ingest),
        "spans_per_batch": args.spans_per_batch, "batches": args.batches,
        "cpu_count": os.cpu_count(), "load_average_end": round(os.getloadavg()[0], 1),
        "python": platform.python_version(),
        "note": "all replicas, PostgreSQL, Redis, the mock LLM and the client share the same "
                "cores: a factor near 1 means the box is saturated, not that replicas do not scale",
    }  # fmt: skip
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "replicas.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {results / 'replicas.json'}")


if __name__ == "__main__":
    main()
