"""Ingest benchmark: OTLP/protobuf agent traces into `tether serve` (SQLite or --pg): spans/s
persisted, server CPU per span, server memory (peak RSS and PSS of the process tree), bytes
stored per span; then the run list and cost-by-day queries at --stored spans, and optionally the
same load into Phoenix.

    .venv/bin/python bench/ingest.py --spans 100000 --senders 4 --batch 500 [--pg] [--vs phoenix]
Writes bench/results/ingest.json (SQLite) or ingest_pg.json (--pg) with the README's row.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from record import Row, load, write
from sqlalchemy import create_engine, func, select, text

from tether.core.records import RunAttribution, SpanRecord, run_id_for_trace
from tether.store.engine import make_engine, reading
from tether.store.ingest import write_spans
from tether.store.migrate import upgrade
from tether.store.tables import spans

ROOT = Path(__file__).resolve().parent.parent
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SPANS_PER_TRACE = 10
WORDS = (
    "invoice", "refund", "customer", "order", "shipping", "account", "balance", "policy",
    "ticket", "escalate", "review", "payment", "status", "pending", "approved", "denied",
    "warehouse", "delivery", "address", "update", "summary", "report", "anomaly", "threshold",
    "vendor", "contract", "renewal", "priority",
)  # fmt: skip
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "gpt-4.1-mini")
TOOLS = ("crm.lookup", "erp.invoice_get", "mail.draft", "kb.search")


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _text(rng: random.Random, n_bytes: int) -> str:
    words: list[str] = []
    size = 0
    while size < n_bytes:
        w = rng.choice(WORDS)
        words.append(w)
        size += len(w) + 1
    return " ".join(words)


def make_trace(rng: random.Random, t0_ns: int) -> tuple[list[Span], list[KeyValue]]:
    """One agent run: an agent root, 5 LLM calls and 4 tool calls, ~1 KB of text per span."""
    trace_id = rng.randbytes(16)
    root_id = rng.randbytes(8)
    agent = f"agent-{rng.randrange(20)}"
    resource = [_kv("service.name", agent), _kv("service.version", f"v{rng.randrange(3)}"),
                _kv("tether.user", f"user-{rng.randrange(500)}")]  # fmt: skip
    out: list[Span] = []
    t = t0_ns
    for i in range(SPANS_PER_TRACE - 1):
        start, t = t, t + rng.randrange(50, 900) * 1_000_000
        sid = rng.randbytes(8)
        if i % 2 == 0:
            model = rng.choice(MODELS)
            attrs = {
                "gen_ai.operation.name": "chat", "gen_ai.system": "openai",
                "gen_ai.request.model": model, "gen_ai.response.model": model,
                "gen_ai.usage.input_tokens": rng.randrange(200, 4000),
                "gen_ai.usage.output_tokens": rng.randrange(20, 800),
                "openinference.span.kind": "LLM", "llm.model_name": model,
                "input.value": _text(rng, 700), "output.value": _text(rng, 300),
            }  # fmt: skip
            name = f"chat {model}"
        else:
            tool = rng.choice(TOOLS)
            attrs = {
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                "openinference.span.kind": "TOOL", "tool.name": tool,
                "input.value": json.dumps({"query": _text(rng, 300)}),
                "output.value": _text(rng, 700),
            }  # fmt: skip
            name = f"execute_tool {tool}"
        out.append(Span(trace_id=trace_id, span_id=sid, parent_span_id=root_id, name=name,
                        start_time_unix_nano=start, end_time_unix_nano=t,
                        attributes=[_kv(k, v) for k, v in attrs.items()],
                        status=Status(code=1)))  # fmt: skip
    root_attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent,
                  "tether.task_id": f"task-{rng.randrange(10**6)}",
                  "input.value": _text(rng, 500), "output.value": _text(rng, 500)}  # fmt: skip
    out.insert(0, Span(trace_id=trace_id, span_id=root_id, name=f"invoke_agent {agent}",
                       start_time_unix_nano=t0_ns, end_time_unix_nano=t + 1_000_000,
                       attributes=[_kv(k, v) for k, v in root_attrs.items()],
                       status=Status(code=1)))  # fmt: skip
    return out, resource


def make_batches(n_spans: int, batch: int, seed: int = 7) -> list[bytes]:
    """Serialized ExportTraceServiceRequests of `batch` spans (whole traces), made up front."""
    rng = random.Random(seed)
    now_ns = time.time_ns()
    per_batch = max(1, batch // SPANS_PER_TRACE)
    n_traces = n_spans // SPANS_PER_TRACE
    out = []
    for first in range(0, n_traces, per_batch):
        req = ExportTraceServiceRequest()
        for _ in range(min(per_batch, n_traces - first)):
            t0 = now_ns - rng.randrange(0, 30 * 86400) * 10**9
            trace, resource = make_trace(rng, t0)
            req.resource_spans.append(ResourceSpans(
                resource={"attributes": resource},
                scope_spans=[ScopeSpans(spans=trace)]))  # fmt: skip
        out.append(req.SerializeToString())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(url)


def _tree(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except OSError:
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return tree


def _kb(path: Path, field: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler:
    """Peak memory of a process tree: the sum of RSS (counts shared pages once per process) and
    of PSS (shares them out: what the tree really holds), sampled every 0.25 s."""

    def __init__(self, pid: int) -> None:
        self.pid, self.rss_kb, self.pss_kb = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            rss = sum(_kb(Path(f"/proc/{p}/status"), "VmRSS") for p in pids)
            pss = sum(_kb(Path(f"/proc/{p}/smaps_rollup"), "Pss") for p in pids)
            self.rss_kb, self.pss_kb = max(self.rss_kb, rss), max(self.pss_kb, pss)
            self._stop.wait(0.25)


def stored_bytes(db_url: str) -> dict[str, int]:
    """Bytes on disk: SQLite's file with its WAL as left, then after a checkpoint; PostgreSQL's
    tables with their indexes and TOAST."""
    if db_url.startswith("sqlite"):
        path = Path(db_url.removeprefix("sqlite:///"))
        wal = Path(f"{path}-wal")
        with_wal = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        con = sqlite3.connect(path)
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
        return {"with_wal": with_wal, "checkpointed": path.stat().st_size}
    engine = make_engine(db_url, pool_size=1)
    with engine.connect() as conn:
        total = conn.execute(text(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind = 'r'")).scalar_one()  # fmt: skip
    engine.dispose()
    return {"checkpointed": int(total)}


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and its live descendants (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return sum(cpu.get(p, 0.0) for p in tree)


@contextmanager
def tether_server(db_url: str, home: Path, workers: int) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {**os.environ, "TETHER_HOME": str(home), "TETHER_DATABASE_URL": db_url,
           "TETHER_PORT": str(port), "TETHER_LOG_LEVEL": "warning"}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "tether.cli.main", "serve", "--workers",
                             str(workers)], env=env)  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def send_all(url: str, batches: list[bytes], senders: int) -> dict[str, float]:
    """Posts every batch from `senders` threads; returns elapsed seconds and request latencies."""
    lock = threading.Lock()
    queue = list(reversed(batches))
    latencies: list[float] = []
    failures: list[str] = []

    retries = [0]

    def post(client: httpx.Client, body: bytes) -> httpx.Response:
        # like the OTLP exporters, 429/502/503/504 are retried with backoff (capped at 4 s, and
        # never given up within 30 min: every span must land for the persisted rate to count)
        delay, give_up = 0.25, time.monotonic() + 1800
        while True:
            r = client.post(f"{url}/v1/traces", content=body,
                            headers={"content-type": "application/x-protobuf"})  # fmt: skip
            if r.status_code not in (429, 502, 503, 504) or time.monotonic() > give_up:
                return r
            with lock:
                retries[0] += 1
            after = r.headers.get("retry-after", "")
            time.sleep(float(after) if after.isdigit() else delay)
            delay = min(4.0, delay * 2)

    def worker() -> None:
        with httpx.Client(timeout=120) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                t = time.perf_counter()
                r = post(client, body)
                with lock:
                    latencies.append(time.perf_counter() - t)
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")

    start = time.perf_counter()
    with ThreadPoolExecutor(senders) as pool:
        for f in [pool.submit(worker) for _ in range(senders)]:
            f.result()
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, first: {failures[0]}")
    lat = sorted(latencies)
    return {"elapsed_s": elapsed, "request_p50_ms": 1000 * lat[len(lat) // 2],
            "request_p95_ms": 1000 * lat[int(len(lat) * 0.95)], "retries": retries[0]}  # fmt: skip


def wait_count(count: Callable[[], int], expected: int, start: float, timeout: float) -> float:
    """Polls until `count()` reaches `expected`; returns seconds since `start`."""
    deadline = time.monotonic() + timeout
    while True:
        n = count()
        if n >= expected:
            return time.perf_counter() - start
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {n} of {expected} spans visible after {timeout}s")
        time.sleep(0.05)


def tether_count(db_url: str) -> Callable[[], int]:
    engine = make_engine(db_url, pool_size=1)

    def count() -> int:
        with reading(engine) as conn:
            return int(conn.execute(select(func.count()).select_from(spans)).scalar_one())

    return count


def bulk_load(db_url: str, target_spans: int, seed: int = 11) -> float:
    """Adds SpanRecords straight through store.ingest until `target_spans` are stored."""
    engine = make_engine(db_url, pool_size=2)
    have = tether_count(db_url)()
    rng = random.Random(seed)
    now = datetime.now(UTC)
    start = time.perf_counter()
    text_in, text_out = _text(rng, 600), _text(rng, 400)
    batch: list[SpanRecord] = []
    for i in range(have // SPANS_PER_TRACE, target_spans // SPANS_PER_TRACE):
        trace = f"{i:08x}" + uuid.uuid4().hex[8:]
        run_id = run_id_for_trace(trace)
        t0 = now - timedelta(seconds=rng.randrange(30 * 86400))
        agent = f"agent-{rng.randrange(20)}"
        attribution = RunAttribution(agent=agent, version=f"v{rng.randrange(3)}",
                                     task_id=f"task-{i}",
                                     user=f"user-{rng.randrange(500)}")  # fmt: skip
        root = SpanRecord(trace_id=trace, span_id=f"{1:016x}", run_id=run_id, kind="agent",
                          name=f"invoke_agent {agent}", started_at=t0,
                          ended_at=t0 + timedelta(seconds=9), is_root=True, input=text_in,
                          output=text_out, status="ok", attribution=attribution)  # fmt: skip
        batch.append(root)
        for j in range(2, SPANS_PER_TRACE + 1):
            llm = j % 2 == 0
            batch.append(replace(
                root, span_id=f"{j:016x}", parent_id=root.span_id, is_root=False,
                kind="llm" if llm else "tool", name="chat gpt-4o-mini" if llm else "kb.search",
                started_at=t0 + timedelta(seconds=j - 1), ended_at=t0 + timedelta(seconds=j),
                model="gpt-4o-mini" if llm else None, input_tokens=1000 if llm else None,
                output_tokens=200 if llm else None, cost_nusd=270_000 if llm else None,
                attributes={"gen_ai.operation.name": "chat" if llm else "execute_tool"},
            ))  # fmt: skip
        if len(batch) >= 5000:
            write_spans(engine, batch, now=now, source="bench")
            batch = []
    if batch:
        write_spans(engine, batch, now=now, source="bench")
    engine.dispose()
    return time.perf_counter() - start


def percentiles(fn: Callable[[], Any], n: int = 40) -> dict[str, float]:
    fn()  # warm the cache: the figures are for a running server, not a cold start
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t))
    times.sort()
    return {"p50_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[int(n * 0.95) - 1], 2)}  # fmt: skip


def query_latencies(db_url: str) -> dict[str, Any]:
    from tether.store import costs as cost_store
    from tether.store import runs as run_store

    engine = make_engine(db_url, pool_size=2)
    out: dict[str, Any] = {
        "run_list": percentiles(lambda: run_store.list_runs(engine, limit=50)),
        "run_list_by_agent": percentiles(
            lambda: run_store.list_runs(engine, run_store.RunFilters(agent="agent-3"), limit=50)
        ),
        "cost_by_day": percentiles(lambda: cost_store.cost_breakdown(engine, "day")),
    }
    with reading(engine) as conn:
        out["spans"] = int(conn.execute(select(func.count()).select_from(spans)).scalar_one())
        out["runs"] = int(conn.execute(text("SELECT count(*) FROM runs")).scalar_one())
    engine.dispose()
    return out


# ---------------------------------------------------------------- Arize Phoenix, for comparison


@contextmanager
def phoenix_server(venv: Path, workdir: Path) -> Iterator[tuple[str, Path]]:
    port, grpc = free_port(), free_port()
    env = {**os.environ, "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(grpc),
           "PHOENIX_WORKING_DIR": str(workdir), "PHOENIX_TELEMETRY_ENABLED": "false"}  # fmt: skip
    env.pop("PHOENIX_SQL_DATABASE_URL", None)
    log = (workdir / "phoenix.log").open("wb")
    proc = subprocess.Popen([str(venv / "bin" / "phoenix"), "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=300)
        yield f"http://127.0.0.1:{port}", workdir / "phoenix.db"
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def phoenix_count(db: Path) -> Callable[[], int]:
    def count() -> int:
        if not db.exists():
            return 0
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            return int(con.execute("SELECT count(*) FROM spans").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            con.close()

    return count


def run_phoenix(batches: list[bytes], n_spans: int, senders: int) -> dict[str, Any]:
    venv = Path(os.environ.get("PHOENIX_VENV", "/tmp/phoenix-venv"))
    if not (venv / "bin" / "phoenix").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "arize-phoenix"], check=True)
    version = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import phoenix; print(phoenix.__version__)"],
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, phoenix_server(venv, Path(tmp)) as (url, db):
        start = time.perf_counter()
        sent = send_all(url, batches, senders)
        persisted_s = wait_count(phoenix_count(db), n_spans, start, timeout=1800)
    return {"version": version, "spans": n_spans,
            "accepted_spans_per_s": round(n_spans / sent["elapsed_s"]),
            "persisted_spans_per_s": round(n_spans / persisted_s),
            "request_p50_ms": round(sent["request_p50_ms"], 1),
            "retried_503s": sent["retries"]}  # fmt: skip


# ---------------------------------------------------------------- main


def pg_schema_url() -> tuple[str, Callable[[], None]]:
    schema = "bench_" + uuid.uuid4().hex[:8]
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return f"{PG_URL}?options=-csearch_path%3D{schema}", drop


def run_tether(args: argparse.Namespace, batches: list[bytes], home: Path) -> dict[str, Any]:
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if args.pg:
        db_url, drop = pg_schema_url()
    else:
        db_url = f"sqlite:///{home / 'tether.db'}"
    try:
        engine = make_engine(db_url, pool_size=1)
        upgrade(engine)
        engine.dispose()
        n = len(batches) and sum(1 for _ in range(args.spans // SPANS_PER_TRACE)) * SPANS_PER_TRACE
        with tether_server(db_url, home, args.workers) as (url, pid), MemorySampler(pid) as mem:
            cpu0 = tree_cpu_s(pid)
            start = time.perf_counter()
            sent = send_all(url, batches, args.senders)
            persisted_s = wait_count(tether_count(db_url), n, start, timeout=60)
            server_cpu = tree_cpu_s(pid) - cpu0
        size = stored_bytes(db_url)
        result: dict[str, Any] = {
            "database": "postgresql" if args.pg else "sqlite", "spans": n,
            "senders": args.senders, "batch": args.batch, "workers": args.workers,
            "accepted_spans_per_s": round(n / sent["elapsed_s"]),
            "persisted_spans_per_s": round(n / persisted_s),
            "request_p50_ms": round(sent["request_p50_ms"], 1),
            "request_p95_ms": round(sent["request_p95_ms"], 1),
            # load-independent: what one span costs the server (all workers), in CPU time
            "server_cpu_us_per_span": round(1e6 * server_cpu / n, 1),
            "spans_per_server_cpu_s": round(n / server_cpu) if server_cpu else None,
            "server_peak_rss_mb": round(mem.rss_kb / 1024), "server_peak_pss_mb":
            round(mem.pss_kb / 1024), "bytes_per_span": round(size["checkpointed"] / n),
            "bytes_per_span_with_wal": round(size.get("with_wal", size["checkpointed"]) / n),
        }  # fmt: skip
        print(
            f"tether ({result['database']}): {n} spans, {result['accepted_spans_per_s']} "
            f"spans/s accepted, {result['persisted_spans_per_s']} spans/s persisted; server CPU "
            f"{result['server_cpu_us_per_span']} us/span; peak RSS {result['server_peak_rss_mb']} "
            f"MB (PSS {result['server_peak_pss_mb']} MB, {args.workers} workers); "
            f"{result['bytes_per_span']} bytes stored per span "
            f"({result['bytes_per_span_with_wal']} with the WAL as left)",
            flush=True,
        )
        if args.stored:
            load_s = bulk_load(db_url, args.stored)
            q = query_latencies(db_url)
            q["bulk_load_s"] = round(load_s, 1)
            result["at_stored"] = q
            print(f"  at {q['spans']} spans / {q['runs']} runs: run list p50 "
                  f"{q['run_list']['p50_ms']} ms p95 {q['run_list']['p95_ms']} ms; cost by day "
                  f"p50 {q['cost_by_day']['p50_ms']} ms p95 {q['cost_by_day']['p95_ms']} ms",
                  flush=True)  # fmt: skip
        return result
    finally:
        drop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spans", type=int, default=100_000)
    p.add_argument("--senders", type=int, default=4)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="tether serve --workers (1, its default, holds RSS under 200 MB)",
    )
    p.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    p.add_argument("--vs", choices=["phoenix"], help="run the same load against Arize Phoenix")
    p.add_argument("--stored", type=int, default=0,
                   help="then bulk-load to N spans; time the run list and cost-by-day")  # fmt: skip
    args = p.parse_args()
    load_before = load()
    t = time.perf_counter()
    batches = make_batches(args.spans, args.batch)
    print(f"made {len(batches)} batches of ~{args.batch} spans "
          f"({sum(map(len, batches)) / 1e6:.0f} MB protobuf) in {time.perf_counter() - t:.1f}s",
          flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        result = run_tether(args, batches, Path(tmp))
    save(result, load_before)
    if args.vs == "phoenix":
        ph = run_phoenix(batches, result["spans"], args.senders)
        result["phoenix"] = ph
        result["persisted_ratio_vs_phoenix"] = round(
            result["persisted_spans_per_s"] / ph["persisted_spans_per_s"], 2)  # fmt: skip
        print(f"phoenix {ph['version']}: {ph['accepted_spans_per_s']} spans/s accepted, "
              f"{ph['persisted_spans_per_s']} spans/s persisted; tether/phoenix persisted = "
              f"{result['persisted_ratio_vs_phoenix']}x", flush=True)  # fmt: skip
        save(result, load_before)


def save(result: dict[str, Any], load_before: float) -> None:
    """bench/results/ingest.json (SQLite) or ingest_pg.json, with the README's row."""
    pg = result["database"] == "postgresql"
    row = Row(
        f"OTLP ingest on {'PostgreSQL' if pg else 'SQLite'}: {result['spans']:,} realistic spans "
        f"in batches of {result['batch']}, {result['senders']} senders, "
        f"`serve --workers {result['workers']}`",
        f"{result['persisted_spans_per_s']:,} spans/s persisted, "
        f"{result['server_cpu_us_per_span']} µs server CPU/span, peak RSS "
        f"{result['server_peak_rss_mb']} MB, {result['bytes_per_span']:,} bytes/span",
        "≥ 20,000 spans/s (SQLite), ≤ 200 MB RSS, ≤ 2.5 KB/span",
    )
    write("ingest_pg" if pg else "ingest", command=" ".join(["bench/ingest.py", *sys.argv[1:]]),
          figures=result, rows=[row], load_before=load_before)  # fmt: skip


if __name__ == "__main__":
    main()
