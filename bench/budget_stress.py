"""Budget stress: 500 concurrent requests against a $1.00 run cap, on SQLite and PostgreSQL.

    python bench/budget_stress.py                    # both databases, through `tether serve
                                                     # --workers 2` if the LLM routes exist
    python bench/budget_stress.py --mode ledger      # the ledger from 2 processes directly
    python bench/budget_stress.py --db postgresql --redis

Reports the overshoot (must be exactly $0.00) and how much of the cap was used: after the
burst the refused requests are retried one by one, and the money left at the end must be less
than the smallest worst case still refused (nothing that could fit was turned away).
Writes bench/results/budget_stress.json (budget_stress_redis.json with --redis).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from tether.core.budget import Limits, RunLimits, cost_nusd, reservation_estimate, scopes_for
from tether.core.errors import BudgetExceededError
from tether.core.money import nusd_to_usd
from tether.core.pricing import load_price_table

PG_URL = os.environ.get("TETHER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TETHER_TEST_REDIS", "redis://127.0.0.1:6379/0")
CAP_USD = Decimal("1.00")
CAP = 1_000_000_000
RESULTS = Path(__file__).parent / "results" / "budget_stress.json"


@contextmanager
def database(kind: str, home: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{home / 'tether.db'}"
        return
    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# ---------------------------------------------------------------- ledger mode (2 processes)


def _requests(n: int, seed: int) -> list[tuple[int, int, str, float, float]]:
    rng = random.Random(seed)
    return [
        (rng.randint(200, 4000), rng.randint(64, 1024), rng.choice(["mock-small", "mock-large"]),
         rng.random(), rng.random())
        for _ in range(n)
    ]  # fmt: skip


class _Caller:
    """Plays one agent call on the ledger: reserve the worst case, "call", settle."""

    def __init__(self, db_url: str, redis_url: str | None, n: int, tight: bool, run_id: str):
        from tether.store.engine import make_engine
        from tether.store.ledger import make_ledger

        self.engine = make_engine(db_url, pool_size=5)  # the test PostgreSQL is shared
        client = None
        if redis_url:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(redis_url, max_connections=300)
        self.ledger = make_ledger(self.engine, client)
        self.prices = load_price_table()
        self.reqs = _requests(n, 5)
        self.tight, self.run_id = tight, run_id
        limits = Limits(RunLimits(CAP_USD))
        self.caps = scopes_for(limits, run_id=run_id, agent=None, user=None, key_id=None,
                               day=date(2026, 11, 25))  # fmt: skip

    async def one(self, i: int, upstream_s: float = 0.01) -> dict[str, Any]:
        size, max_tokens, model, fin, fout = self.reqs[i]
        price = self.prices.price(model)
        assert price is not None
        amount, tokens = reservation_estimate(size, max_tokens, price)
        now = datetime.now(UTC)
        try:
            r = await self.ledger.reserve(self.caps, amount_nusd=amount, tokens=tokens,
                                          run_id=self.run_id, now=now)  # fmt: skip
        except BudgetExceededError:
            return {"i": i, "ok": False, "reserved": amount, "actual": 0}
        await asyncio.sleep(upstream_s * fin)  # the upstream call
        if self.tight:
            actual = amount
        else:  # real usage: within the bounds, usually well below them
            tin, tout = int(size / 4 * (0.5 + fin / 2)), int(max_tokens * fout)
            actual = cost_nusd(tin, tout, price)
        await self.ledger.settle(r, actual_nusd=actual, actual_tokens=0, now=datetime.now(UTC))
        return {"i": i, "ok": True, "reserved": amount, "actual": actual}


def _worker(
    args: tuple[str, str | None, list[int], int, bool, str, Any],
) -> list[dict[str, Any]]:
    db_url, redis_url, indices, n, tight, run_id, barrier = args
    caller = _Caller(db_url, redis_url, n, tight, run_id)
    barrier.wait()

    async def calls() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(caller.one(i) for i in indices)))

    out = asyncio.run(calls())
    caller.engine.dispose()
    return out


def ledger_run(db_url: str, redis_url: str | None, n: int, tight: bool) -> dict[str, Any]:
    from tether.store.engine import make_engine
    from tether.store.migrate import upgrade

    run_id = "run_stress_" + uuid.uuid4().hex[:8]
    fresh = make_engine(db_url)
    upgrade(fresh)  # before any ledger: the Redis ledger reads its namespace from the database
    fresh.dispose()
    caller = _Caller(db_url, redis_url, n, tight, run_id)
    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(2)
    halves = [list(range(0, n, 2)), list(range(1, n, 2))]
    t0 = time.perf_counter()
    with ctx.Pool(2) as pool:
        parts = pool.map(
            _worker, [(db_url, redis_url, h, n, tight, run_id, barrier) for h in halves]
        )
    elapsed = time.perf_counter() - t0
    burst = [r for part in parts for r in part]
    # the refused ones again, one at a time: whatever still fits gets in

    async def after() -> tuple[list[dict[str, Any]], Any]:
        again = [await caller.one(r["i"], 0.0) for r in burst if not r["ok"]]
        return again, await caller.ledger.snapshot(f"run:{run_id}")

    retried, snap = asyncio.run(after())
    spent = snap[1].spent_nusd if snap else 0
    assert spent == sum(r["actual"] for r in burst + retried), "ledger and callers disagree"
    refused = [r["reserved"] for r in retried if not r["ok"]]
    caller.engine.dispose()
    out = _summary(spent, burst, refused, elapsed, tight=tight)
    out["admitted_on_retry"] = sum(1 for r in retried if r["ok"])
    out["admitted"] += out["admitted_on_retry"]
    out["refused"] = len(refused)
    return out


def _summary(spent: int, results: list[dict[str, Any]], refused: list[int], elapsed: float,
             **extra: Any) -> dict[str, Any]:  # fmt: skip
    admitted = sum(1 for r in results if r["ok"])
    left = CAP - spent
    return {
        **extra,
        "requests": len(results),
        "admitted": admitted,
        "refused": len(refused),
        "cap_usd": float(CAP_USD),
        "spent_usd": float(nusd_to_usd(spent)),
        "overshoot_usd": float(nusd_to_usd(max(0, spent - CAP))),
        "left_usd": float(nusd_to_usd(left)),
        "smallest_refused_worst_case_usd": float(nusd_to_usd(min(refused))) if refused else None,
        # the cap is used up: nothing that was refused would fit in what is left
        "cap_used_up": not refused or left < min(refused),
        "seconds": round(elapsed, 2),
    }


# ---------------------------------------------------------------- http mode (tether serve)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


POLICY = """agent: stress
budgets:
  run: {max_cost_usd: 1.00}
"""


def http_run(db_url: str, home: Path, redis_url: str | None, n: int) -> dict[str, Any]:
    from tether.store.engine import make_engine
    from tether.store.keys import create_key
    from tether.store.migrate import upgrade
    from tether.store.policies import apply_policy

    engine = make_engine(db_url)
    upgrade(engine)
    _, secret = create_key(engine, scopes="agent", agent="stress", name="bench")
    _, admin = create_key(engine, scopes="admin", name="bench-admin")
    apply_policy(engine, POLICY, "bench", datetime.now(UTC))
    mock_port, port = _free_port(), _free_port()
    script = home / "mock.json"
    script.write_text(json.dumps([
        {"match": "LONGSTREAM", "output_tokens": 2000, "chunk_delay_ms": 20},
        {"output_tokens": 700},  # capped by each request's max_tokens, as real models are
    ]))  # fmt: skip
    cfg = home / "tether.yaml"
    cfg.write_text(json.dumps({"providers": [{
        "name": "mock", "kind": "openai", "base_url": f"http://127.0.0.1:{mock_port}/v1",
        "models": ["mock-small", "mock-large"]}]}))  # fmt: skip
    env = {**os.environ, "TETHER_HOME": str(home), "TETHER_DATABASE_URL": db_url,
           "TETHER_PORT": str(port), "TETHER_LOG_LEVEL": "warning"}  # fmt: skip
    if redis_url:
        env["TETHER_REDIS_URL"] = redis_url
    tether = [sys.executable, "-m", "tether.cli.main"]
    procs = [
        subprocess.Popen([*tether, "mock-llm", "--port", str(mock_port), "--latency-ms", "20",
                          "--script", str(script)],
                         env=env, stdout=subprocess.DEVNULL),
        subprocess.Popen([*tether, "serve", "--workers", "2", "--config", str(cfg)], env=env,
                         stdout=subprocess.DEVNULL),
    ]  # fmt: skip
    try:
        _wait(f"http://127.0.0.1:{mock_port}/v1/models", procs[0])
        _wait(f"http://127.0.0.1:{port}/healthz", procs[1])
        base = f"http://127.0.0.1:{port}"
        out = asyncio.run(_fire(base, secret, admin, n, engine))
        out["kill_latency_ms"] = asyncio.run(_kills(base, secret, admin))
        return out
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        engine.dispose()


async def _fire(base: str, secret: str, admin: str, n: int, engine: Any) -> dict[str, Any]:
    from tether.store import budgets

    rng = random.Random(5)
    run_id = "run_stress_" + uuid.uuid4().hex[:8]
    headers = {"Authorization": f"Bearer {secret}", "X-Tether-Run-Id": run_id}
    bodies = [
        {"model": rng.choice(["mock-small", "mock-large"]), "max_tokens": rng.randint(64, 1024),
         "messages": [{"role": "user", "content": "word " * rng.randint(20, 800)}]}
        for _ in range(n)
    ]  # fmt: skip
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def one(body: dict[str, Any]) -> dict[str, Any]:
            r = await client.post("/llm/v1/chat/completions", json=body, headers=headers)
            if r.status_code == 402:
                err = r.json().get("error", {})
                needed = err.get("needed_usd", (err.get("details") or {}).get("needed_usd"))
                if needed is None:
                    raise RuntimeError(f"a 402 without needed_usd: {err}")
                return {"ok": False, "status": 402, "needed": needed}
            return {"ok": r.status_code == 200, "status": r.status_code, "needed": None}

        t0 = time.perf_counter()
        burst = await asyncio.gather(*(one(b) for b in bodies))
        elapsed = time.perf_counter() - t0
        if any(r["status"] not in (200, 402) for r in burst):
            codes = sorted({r["status"] for r in burst})
            raise RuntimeError(f"unexpected statuses {codes}")
        # the refused ones again, one at a time: whatever still fits gets in
        again = [await one(b) for b, r in zip(bodies, burst, strict=True) if not r["ok"]]
        if any(r["status"] not in (200, 402) for r in again):
            raise RuntimeError(f"unexpected statuses {sorted({r['status'] for r in again})}")
    snap = budgets.snapshot(engine, f"run:{run_id}")
    if snap is None:
        raise RuntimeError("no budget counter for the run: are budgets enforced?")
    spent = snap[1].spent_nusd
    run_cost = await _run_cost(base, admin, run_id, float(nusd_to_usd(spent)))
    refused = [int(Decimal(str(r["needed"])) * 10**9) for r in again if r["needed"]]
    out = _summary(spent, burst, refused, elapsed)
    out["admitted_on_retry"] = sum(1 for r in again if r["ok"])
    out["admitted"] += out["admitted_on_retry"]
    out["refused"] = sum(1 for r in again if not r["ok"])
    # the spans' own total (what the run page shows), written by the gateway independently
    out["run_cost_usd_from_spans"] = run_cost
    if run_cost is not None and run_cost > float(CAP_USD):
        out["overshoot_usd"] = max(out["overshoot_usd"], run_cost - float(CAP_USD))
    return out


async def _run_cost(base: str, secret: str, run_id: str, expect: float) -> float | None:
    """The run's cost_usd from the API once the span writer has caught up with the ledger
    (waits up to 20 s for it to reach `expect`)."""
    headers = {"Authorization": f"Bearer {secret}"}
    cost = None
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for _ in range(200):
            r = await client.get(f"/api/v1/runs/{run_id}", headers=headers)
            if r.status_code != 200:
                return None
            cost = r.json().get("cost_usd")
            if cost is not None and round(float(cost), 9) >= round(expect, 9):
                break
            await asyncio.sleep(0.1)
    return None if cost is None else float(cost)


async def _kills(base: str, secret: str, admin: str, n: int = 10) -> dict[str, float]:
    """Streams in flight on either worker, killed through the API (landing on either worker):
    the time from sending the kill to the stream's end."""
    out = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for i in range(n):
            run_id = f"run_kill_{uuid.uuid4().hex[:8]}_{i}"
            headers = {"Authorization": f"Bearer {secret}", "X-Tether-Run-Id": run_id}
            body = {"model": "mock-small", "max_tokens": 2000, "stream": True,
                    "messages": [{"role": "user", "content": "LONGSTREAM please"}]}  # fmt: skip
            async with client.stream("POST", "/llm/v1/chat/completions", json=body,
                                     headers=headers) as resp:  # fmt: skip
                if resp.status_code != 200:
                    raise RuntimeError(f"stream refused: {resp.status_code}")
                lines = resp.aiter_lines()
                async for line in lines:
                    if line.startswith("data:"):
                        break
                t0 = time.perf_counter()
                k = await client.post(f"/api/v1/runs/{run_id}/kill",
                                      headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
                if k.status_code != 200:
                    raise RuntimeError(f"kill failed: {k.status_code} {k.text}")
                t1 = time.perf_counter()
                async for _ in lines:
                    pass
                t2 = time.perf_counter()
                out.append(((t2 - t0) * 1000, (t2 - t1) * 1000))
    sent = sorted(o[0] for o in out)
    acked = sorted(o[1] for o in out)
    return {
        "p50": round(sent[len(sent) // 2], 1),
        "max": round(sent[-1], 1),
        "n": len(out),
        "after_ack_p50": round(acked[len(acked) // 2], 1),
        "after_ack_max": round(acked[-1], 1),
    }


def routes_exist() -> bool:
    """Whether this build's app serves the OpenAI route (else the ledger is driven directly)."""
    from tether.config import load_settings
    from tether.server.app import create_app
    from tether.store.engine import make_engine

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/probe.db")
        app = create_app(load_settings(home=Path(tmp)), engine=engine)
        paths = {getattr(r, "path", "") for r in app.routes}
        engine.dispose()
    return "/llm/v1/chat/completions" in paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["auto", "http", "ledger"], default="auto")
    ap.add_argument("--db", choices=["both", "sqlite", "postgresql"], default="both")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--redis", action="store_true", help="use the Redis ledger")
    a = ap.parse_args()
    mode = a.mode if a.mode != "auto" else ("http" if routes_exist() else "ledger")
    redis_url = REDIS_URL if a.redis else None
    report: dict[str, Any] = {"mode": mode, "redis": bool(redis_url), "runs": {}}
    for kind in ["sqlite", "postgresql"] if a.db == "both" else [a.db]:
        with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as url:
            if mode == "http":
                res = {"http": http_run(url, Path(tmp), redis_url, a.requests)}
            else:
                res = {
                    "worst_case_usage": ledger_run(url, redis_url, a.requests, tight=True),
                    "real_usage": ledger_run(url, redis_url, a.requests, tight=False),
                }
        report["runs"][kind] = res
        for name, r in res.items():
            print(f"{kind:10} {mode}/{name:16} admitted {r['admitted']:3}/{r['requests']}  "
                  f"spent ${r['spent_usd']:.6f} of ${r['cap_usd']:.2f}  "
                  f"overshoot ${r['overshoot_usd']:.2f}  left ${r['left_usd']:.6f}  "
                  f"cap used up: {r['cap_used_up']}  ({r['seconds']} s)")  # fmt: skip
            if "kill_latency_ms" in r:
                k = r["kill_latency_ms"]
                print(f"{kind:10} kill sent -> stream end: p50 {k['p50']} ms, max {k['max']} ms"
                      f" (after the kill's 200: p50 {k['after_ack_p50']}, max "
                      f"{k['after_ack_max']} ms) over {k['n']} kills, 2 workers; run cost from "
                      "spans "
                      f"${r['run_cost_usd_from_spans']}")  # fmt: skip
    path = RESULTS.with_name("budget_stress_redis.json") if redis_url else RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    bad = [k for k, res in report["runs"].items() for r in res.values() if r["overshoot_usd"]]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
