"""Scale-out: LLM gateway throughput through haproxy with 1, 2 and 3 `tether serve` replicas on
one PostgreSQL and Redis (the production path: an agent key whose policy has a run and a day
budget, a run per task), and OTLP ingest spans/s with 3 replicas.

    .venv/bin/python bench/replicas.py [--requests 600] [--concurrency 24] [--batches 120]

Also measures, on the 3 replicas, how long after a kill answered on one replica a stream on
another ends (PostgreSQL LISTEN/NOTIFY; target 100 ms). Prints the figures and the scaling factor
over one replica; writes bench/results/replicas.json (and its README rows).
On a 2-core machine the replicas share the same two cores (and PostgreSQL, Redis, the mock LLM
and the load generator run there too), so the factor measures contention, not capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from record import Row, load, write  # noqa: E402
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


def kill_latencies(cluster: Cluster, headers: dict[str, str], admin: dict[str, str],
                   n: int) -> list[tuple[float, float]]:  # fmt: skip
    """Per kill: (seconds from sending it to replica 1 until the run's stream on replica 0
    ended, seconds the kill request itself took on replica 1 (HTTP, commit, audit))."""
    a, b = cluster.replicas[0].url, cluster.replicas[1].url
    out = []
    for i in range(n):
        run_id = f"run_bench_kill_{i}_{os.getpid()}"
        times: list[float] = []
        with httpx.Client(timeout=60) as client, client.stream(
            "POST", f"{a}/llm/v1/chat/completions",
            headers={**headers, "x-tether-run-id": run_id},
            json={"model": "mock-small", "stream": True, "max_tokens": 500,
                  "messages": [{"role": "user", "content": "[[long]]"}]},
        ) as stream:  # fmt: skip
            lines = stream.iter_lines()
            next(lines)

            def kill(run_id: str = run_id, times: list[float] = times) -> None:
                times.append(time.perf_counter())
                r = httpx.post(f"{b}/api/v1/runs/{run_id}/kill", headers=admin, timeout=60)
                r.raise_for_status()
                times.append(time.perf_counter())

            killer = threading.Thread(target=kill)
            killer.start()
            tail = list(lines)
            ended = time.perf_counter()
            killer.join(60)
        if not any("run_killed" in line for line in tail):
            raise RuntimeError(f"the stream of {run_id} was not cut by the kill")
        out.append((ended - times[0], times[1] - times[0]))
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def gateway_rps(
    n_replicas: int, args: argparse.Namespace, mock: MockServer, kills: list[tuple[float, float]]
) -> float:
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

        rps = asyncio.run(_drive(cluster.url, args.requests, args.concurrency, make))
        if n_replicas == 3 and args.kills:
            admin = {"authorization": f"Bearer {create_key(cluster.engine, scopes='admin')[1]}"}
            kills += kill_latencies(cluster, headers, admin, args.kills)
        return rps
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
                span_id = f"{i + 1:08x}{j + 1:08x}"  # never all zero
                spans.append({**spans[1], "spanId": span_id, "parentSpanId": root["spanId"]})
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
    p.add_argument("--kills", type=int, default=20, help="cross-replica kills to time")
    args = p.parse_args()
    load_before = load()
    mock = MockServer(MAIN_SCRIPT, api_key=UPSTREAM_KEY)
    kills: list[tuple[float, float]] = []
    try:
        rps = {n: gateway_rps(n, args, mock, kills) for n in (1, 2, 3)}
        ingest = ingest_spans_per_s(args, mock)
    finally:
        mock.stop()
    scaling = {n: rps[n] / rps[1] for n in rps}
    for n in (1, 2, 3):
        print(f"gateway, {n} replica(s): {rps[n]:8.1f} req/s  (x{scaling[n]:.2f} of one)")
    print(f"ingest, 3 replicas:    {ingest:8.0f} spans/s")
    total_ms = [t * 1000 for t, _ in kills]
    request_ms = [r * 1000 for _, r in kills]
    # the cut on replica 0 after the kill's answer on replica 1 (negative: the stream ended
    # before the answer arrived); the push itself takes at most the total, at least this
    after_ms = [(t - r) * 1000 for t, r in kills]
    cut = {}
    if kills:
        cut = {
            "sent_to_cut_ms": {"p50": round(_pct(total_ms, 0.5), 1),
                               "p95": round(_pct(total_ms, 0.95), 1),
                               "max": round(max(total_ms), 1)},
            "kill_request_ms": {"p50": round(_pct(request_ms, 0.5), 1),
                                "p95": round(_pct(request_ms, 0.95), 1)},
            "answer_to_cut_ms": {"p50": round(_pct(after_ms, 0.5), 1),
                                 "p95": round(_pct(after_ms, 0.95), 1),
                                 "max": round(max(after_ms), 1)},
            "n": len(kills), "target_ms": 100,
        }  # fmt: skip
        print(f"kill sent to replica 1 -> stream cut on replica 0: p50 "
              f"{cut['sent_to_cut_ms']['p50']} ms, p95 {cut['sent_to_cut_ms']['p95']} ms; the "
              f"kill request itself p50 {cut['kill_request_ms']['p50']} ms; cut after the "
              f"kill's answer p50 {cut['answer_to_cut_ms']['p50']} ms, p95 "
              f"{cut['answer_to_cut_ms']['p95']} ms ({len(kills)} kills)")  # fmt: skip
    print(f"machine: {os.cpu_count()} cores, load average {load_before:g} -> {load():g}")
    figures = {
        "path": "chat completions through haproxy, agent key with run and day budgets, a run per "
                "request, PostgreSQL + Redis shared by the replicas",
        "requests": args.requests, "concurrency": args.concurrency,
        "gateway_rps": {str(n): round(v, 1) for n, v in rps.items()},
        "scaling_factor": {str(n): round(v, 2) for n, v in scaling.items()},
        "ingest_spans_per_s_3_replicas": round(ingest),
        "spans_per_batch": args.spans_per_batch, "batches": args.batches,
        "kill_cut": cut,
        "note": "all replicas, PostgreSQL, Redis, haproxy, the mock LLM and the client share the "
                "same cores: a factor near 1 means the box is saturated, not that replicas do "
                "not scale",
    }  # fmt: skip
    factor = f"x{scaling[2]:.2f} with 2, x{scaling[3]:.2f} with 3"
    rows = [
        Row("gateway through haproxy, 1/2/3 replicas (PostgreSQL + Redis, budgeted agent)",
            f"{rps[1]:.0f} / {rps[2]:.0f} / {rps[3]:.0f} req/s ({factor})",
            "more with more replicas on more cores"),
        Row("OTLP ingest, 3 replicas", f"{ingest:,.0f} spans/s"),
    ]  # fmt: skip
    if cut:
        sent, after = cut["sent_to_cut_ms"], cut["answer_to_cut_ms"]
        rows.append(Row("kill on one replica cuts a stream on another (PostgreSQL NOTIFY)",
                        f"p50 {sent['p50']:.0f} ms from sending the kill (p95 {sent['p95']:.0f}; "
                        f"the kill request itself p50 {cut['kill_request_ms']['p50']:.0f}); cut "
                        f"p50 {max(0.0, after['p50']):.0f} ms, p95 {max(0.0, after['p95']):.0f} ms "
                        f"after the kill's answer ({len(kills)} kills)",
                        "<= 100 ms"))  # fmt: skip
    write("replicas", command="bench/replicas.py", figures=figures, rows=rows,
          load_before=load_before)  # fmt: skip


if __name__ == "__main__":
    main()
