"""LLM gateway overhead on the path production agents take: an agent whose policy has run and
day budgets, a run id per task (X-Tether-Run-Id), a new run every 10 calls. The same requests go
straight to tether's mock LLM, through tether on that budgeted path, through tether with no
policy (the easy path, printed beside it) and, with `--vs litellm`, through LiteLLM's proxy with
a budget configured, against the same mock; interleaved, on SQLite, PostgreSQL and PostgreSQL
with Redis.

    .venv/bin/python bench/gateway.py [--requests 2000] [--db all|sqlite|postgres|redis]
                                      [--vs litellm] [--stream]

The ceiling is printed beside them: `echo`, a bare ASGI app under the same uvicorn that answers
at once (bench/echo_app.py), so the throughput can be read against what any Python server here
reaches (its "added" figures compare it with the mock, not a proxy with a direct call).

Prints added p50/p99 latency at concurrency 1 and throughput at concurrency 32, not streaming
(`--stream` adds streaming); writes bench/results/gateway.json. Targets on the budgeted path:
added p50 <= 1 ms and p99 <= 5 ms at c=1, >= 1,500 req/s at c=32.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import record  # noqa: E402
from tests.conftest import PG_URL, REDIS_URL, free_port, wait_http  # noqa: E402

from tether.store.engine import make_engine  # noqa: E402
from tether.store.keys import create_key  # noqa: E402
from tether.store.migrate import upgrade  # noqa: E402
from tether.store.policies import apply_policy  # noqa: E402

LITELLM_VENV = Path("/tmp/tether-litellm-venv")
PROMPT = "summarise the incident report for the on call engineer in three short sentences please"
BODY = {"model": "mock-small", "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 64}  # fmt: skip
CALLS_PER_RUN = 10
# caps far above what the benchmark spends: every call is checked, held and settled, none refused
POLICY = """\
agent: bench
budgets:
  run: {max_cost_usd: 5.00, max_tokens: 1000000, max_llm_calls: 1000}
  day: {max_cost_usd: 100000}
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its descendants so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, (0, 0.0))[1]
        todo += [c for c, (ppid, _) in stats.items() if ppid == p]
    return total


def spawn(args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> Any:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=out,
                            stderr=subprocess.STDOUT)  # fmt: skip


def start_litellm(mock_url: str, tmp: Path) -> tuple[Any, str]:
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        print("installing litellm[proxy] into", LITELLM_VENV, "(once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
                       check=True)  # fmt: skip
    cfg = tmp / "litellm.yaml"
    cfg.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "mock-small", "litellm_params": {
            "model": "openai/mock-small", "api_base": mock_url + "/v1", "api_key": "sk-mock"}}],
        "general_settings": {"master_key": "sk-litellm-bench"},
        # the proxy-wide budget is what LiteLLM enforces without its PostgreSQL (Prisma)
        # database; per-key and per-team budgets need that database
        "litellm_settings": {"drop_params": True, "telemetry": False,
                             "max_budget": 100000, "budget_duration": "30d"},
    }))  # fmt: skip
    port = free_port()
    proc = spawn(
        [
            str(LITELLM_VENV / "bin" / "litellm"),
            "--config",
            str(cfg),
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        {"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"},
        tmp / "litellm.log",
    )
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=120, proc=None)
    return proc, f"http://127.0.0.1:{port}/v1"


class Conn:
    """A keep-alive HTTP/1.1 connection with prebuilt requests: the load generator should cost
    far less than the servers it measures (httpx would cost more than tether itself). With
    `runs`, each request names a run, a new one every CALLS_PER_RUN requests."""

    _seq = 0

    def __init__(self, url: str, key: str, stream: bool, runs: bool = False) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        body = json.dumps(dict(BODY, stream=True) if stream else BODY).encode()
        self.head = (
            f"POST {parts.path}/chat/completions HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode()
        self.body = body
        self.request = self.head + b"\r\n" + body
        self.runs = runs
        Conn._seq += 1
        self.tag = f"{os.getpid():x}{Conn._seq:x}{time.time_ns() % 10**9:x}"
        self.calls = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def next_request(self) -> bytes:
        if not self.runs:
            return self.request
        run = f"run_b{self.tag}_{self.calls // CALLS_PER_RUN}"
        self.calls += 1
        return self.head + f"X-Tether-Run-Id: {run}\r\n\r\n".encode() + self.body

    async def one(self) -> float:
        t0 = time.perf_counter()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        request = self.next_request()
        self.writer.write(request)
        try:
            head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            # the server had closed this idle keep-alive connection: once more on a new one
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(request)
            head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        if head[9:12] != b"200":
            raise RuntimeError(f"{self.host}:{self.port}: {head[:40]!r}")
        if b"transfer-encoding: chunked" in head:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            await self.reader.readexactly(length)
        if b"connection: close" in head:
            await self.close()
        return time.perf_counter() - t0

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def worker(conn: Conn, todo: Any, out: list[float]) -> None:
    for _ in todo:
        out.append(await conn.one())
    await conn.close()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000.0


def summary(lat: list[float], wall: float | None = None) -> dict[str, float]:
    out = {"p50_ms": round(pct(lat, 0.50), 3), "p99_ms": round(pct(lat, 0.99), 3),
           "mean_ms": round(statistics.fmean(lat) * 1000, 3)}  # fmt: skip
    if wall:
        out["throughput_rps"] = round(len(lat) / wall, 1)
    return out


Target = tuple[str, str, bool]  # url, key, whether each request names a run


async def sequential(targets: dict[str, Target], n: int, stream: bool) -> dict[str, Any]:
    """Concurrency 1: each proxy interleaved request by request with direct calls, so drift
    hits both alike. Proxies are measured one after the other, so that LiteLLM's work after
    its responses does not land on tether's requests (nor the reverse)."""
    out: dict[str, Any] = {}
    direct_url, direct_key, _ = targets["direct"]
    for name, (url, key, runs) in targets.items():
        if name == "direct":
            continue
        d, p = Conn(direct_url, direct_key, stream), Conn(url, key, stream, runs)
        for _ in range(100):  # warm up
            await d.one()
            await p.one()
        base: list[float] = []
        lat: list[float] = []
        for _ in range(n):
            base.append(await d.one())
            lat.append(await p.one())
        await d.close()
        await p.close()
        out[name] = summary(lat)
        out[name]["direct_p50_ms"] = summary(base)["p50_ms"]
        out[name]["direct_p99_ms"] = summary(base)["p99_ms"]
        out[name]["added_p50_ms"] = round(out[name]["p50_ms"] - out[name]["direct_p50_ms"], 3)
        out[name]["added_p99_ms"] = round(out[name]["p99_ms"] - out[name]["direct_p99_ms"], 3)
        out.setdefault("direct", summary(base))
        await asyncio.sleep(1.0)  # let the proxy's background work finish
    return out


async def concurrent(
    targets: dict[str, Target], n: int, stream: bool, pids: dict[str, int],
    conc: int = 32, blocks: int = 4,
) -> dict[str, Any]:  # fmt: skip
    """Concurrency `conc`, in blocks that alternate between targets. Also the CPU time the
    target's server process spent per request: unlike throughput, it does not depend on what
    else the machine is doing."""
    lat: dict[str, list[float]] = {name: [] for name in targets}
    wall: dict[str, float] = dict.fromkeys(targets, 0.0)
    cpu: dict[str, float] = dict.fromkeys(targets, 0.0)
    for url, key, runs in targets.values():  # warm up
        warm = iter(range(conc * 4))
        await asyncio.gather(*(worker(Conn(url, key, stream, runs), warm, [])
                               for _ in range(conc)))  # fmt: skip
    for _ in range(blocks):
        for name, (url, key, runs) in targets.items():
            todo = iter(range(n // blocks))
            conns = [Conn(url, key, stream, runs) for _ in range(conc)]
            c0 = cpu_seconds(pids[name])
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(c, todo, lat[name]) for c in conns))
            wall[name] += time.perf_counter() - t0
            cpu[name] += cpu_seconds(pids[name]) - c0
    out = {name: summary(v, wall[name]) for name, v in lat.items()}
    for name in targets:
        out[name]["server_cpu_ms_per_request"] = round(cpu[name] * 1000 / len(lat[name]), 3)
    return out


def start_tether(db: str, mock_url: str, tmp: Path) -> tuple[Any, str, dict[str, str], Any]:
    """`tether serve` on `db` (sqlite | postgres | redis); its process, URL, the keys of the
    budgeted agent and of an agent with no policy, and a cleanup callable."""
    home = tmp / db
    home.mkdir()
    (home / "tether.yaml").write_text(yaml.safe_dump({"providers": [
        {"name": "mock", "base_url": mock_url + "/v1", "models": ["mock-small"]}]}))  # fmt: skip
    env: dict[str, str] = {}
    cleanup: Any = lambda: None  # noqa: E731
    if db == "sqlite":
        url = f"sqlite:///{home / 'tether.db'}"
    else:
        from sqlalchemy import create_engine, text

        schema = f"bench_{os.getpid()}_{db}"
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))

        def cleanup() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()

        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        if db == "redis":
            env["TETHER_REDIS_URL"] = REDIS_URL
    engine = make_engine(url)
    upgrade(engine)
    apply_policy(engine, POLICY, "bench", datetime.now(UTC))
    keys = {"budgeted": create_key(engine, scopes="agent", agent="bench")[1],
            "no_policy": create_key(engine, scopes="agent", agent="bench-free")[1]}  # fmt: skip
    engine.dispose()
    port = free_port()
    proc = spawn([sys.executable, "-m", "tether.cli.main", "serve", "--config",
                  str(home / "tether.yaml")],
                 {"TETHER_HOME": str(home), "TETHER_DATABASE_URL": url, "TETHER_PORT": str(port),
                  "TETHER_LOG_LEVEL": "warning", **env}, home / "tether.log")  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout=300)
    return proc, f"http://127.0.0.1:{port}/llm/v1", keys, cleanup


def stop(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--db", choices=["all", "sqlite", "postgres", "redis"], default="all")
    ap.add_argument("--vs", choices=["litellm"], default=None)
    ap.add_argument("--stream", action="store_true", help="also measure streaming")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-gw-"))
    dbs = ["sqlite", "postgres", "redis"] if args.db == "all" else [args.db]
    procs: list[Any] = []
    try:
        mock_port = free_port()
        procs.append(spawn([sys.executable, "-m", "tether.cli.main", "mock-llm", "--port",
                            str(mock_port)]))  # fmt: skip
        mock_url = f"http://127.0.0.1:{mock_port}"
        wait_http(mock_url + "/v1/models")
        # the ceiling: a bare ASGI app under the same uvicorn, doing nothing (bench/echo_app.py)
        echo_port = free_port()
        procs.append(spawn([sys.executable, "-m", "uvicorn", "echo_app:app", "--app-dir",
                            str(ROOT / "bench"), "--port", str(echo_port), "--log-level",
                            "warning", "--no-access-log"]))  # fmt: skip
        echo_url = f"http://127.0.0.1:{echo_port}/v1"
        wait_http(echo_url + "/chat/completions", timeout=60)
        litellm = None
        if args.vs == "litellm":
            litellm = start_litellm(mock_url, tmp)
            procs.append(litellm[0])
        results: dict[str, Any] = {}
        load = [round(os.getloadavg()[0], 2)]
        for db in dbs:
            proc, url, keys, cleanup = start_tether(db, mock_url, tmp)
            try:
                targets: dict[str, Target] = {
                    "direct": (mock_url + "/v1", "none", False),
                    "budgeted": (url, keys["budgeted"], True),
                    "no_policy": (url, keys["no_policy"], False),
                    "echo": (echo_url, "none", False),
                }
                # the process whose CPU is counted: the mock itself for direct calls
                pids = {"direct": procs[0].pid, "budgeted": proc.pid, "no_policy": proc.pid,
                        "echo": procs[1].pid}  # fmt: skip
                if litellm is not None:
                    targets["litellm"] = (litellm[1], "sk-litellm-bench", False)
                    pids["litellm"] = litellm[0].pid
                results[db] = {}
                for stream in (False, True) if args.stream else (False,):
                    mode = "stream" if stream else "non_stream"
                    c1 = asyncio.run(sequential(targets, args.requests, stream))
                    c32 = asyncio.run(concurrent(targets, args.requests, stream, pids))
                    results[db][mode] = {"c1": c1, "c32": c32}
                    report(f"{db} {mode}", c1, c32)
                    load.append(round(os.getloadavg()[0], 2))
            finally:
                stop(proc)
                cleanup()
        verdict: dict[str, Any] = {}
        for db in dbs:
            ns = results[db]["non_stream"]
            b = ns["c1"]["budgeted"]
            verdict[db] = {
                "budgeted_added_p50_le_1ms": b["added_p50_ms"] <= 1.0,
                "budgeted_added_p99_le_5ms": b["added_p99_ms"] <= 5.0,
                "budgeted_c32_ge_1500_rps": ns["c32"]["budgeted"]["throughput_rps"] >= 1500,
            }
            if litellm is not None:
                r = ns["c32"]
                verdict[db]["budgeted_c32_throughput_vs_litellm"] = round(
                    r["budgeted"]["throughput_rps"] / r["litellm"]["throughput_rps"], 2
                )
                verdict[db]["litellm_over_budgeted_cpu_per_request"] = round(
                    r["litellm"]["server_cpu_ms_per_request"]
                    / r["budgeted"]["server_cpu_ms_per_request"], 2)  # fmt: skip
        print(json.dumps(verdict, indent=2))
        figures = {"requests_per_cell": args.requests, "body": BODY,
                   "calls_per_run": CALLS_PER_RUN, "policy": POLICY,
                   "litellm_budget": "proxy-wide max_budget (no database)" if litellm else None,
                   "load_avg_1m_max": max(load), "results": results,
                   "verdict": verdict}  # fmt: skip
        command = "bench/gateway.py" + (" --vs litellm" if litellm else "")
        command += f" --requests {args.requests}" if args.requests != 2000 else ""
        record.write("gateway", command=command, figures=figures, rows=readme_rows(results, dbs),
                     load_before=load[0])  # fmt: skip
    finally:
        for p in procs:
            stop(p)


def readme_rows(results: dict[str, Any], dbs: list[str]) -> list[record.Row]:
    """The README's rows: the budgeted path on each database, the easy path and LiteLLM beside."""
    names = {"sqlite": "SQLite", "postgres": "PostgreSQL", "redis": "PostgreSQL+Redis"}

    def cell(db: str, name: str) -> tuple[Any, Any] | None:
        ns = results[db]["non_stream"]
        return (ns["c1"][name], ns["c32"][name]) if name in ns["c1"] else None

    lat, rps, cpu = [], [], []
    for db in dbs:
        b, free, lite = cell(db, "budgeted"), cell(db, "no_policy"), cell(db, "litellm")
        assert b is not None and free is not None
        lat.append(
            f"{names[db]} {b[0]['added_p50_ms']:.2f} / {b[0]['added_p99_ms']:.2f} ms "
            f"(no policy {free[0]['added_p50_ms']:.2f} / {free[0]['added_p99_ms']:.2f})"
        )
        echo = cell(db, "echo")
        rps.append(
            f"{names[db]} {b[1]['throughput_rps']:,.0f} req/s "
            f"(no policy {free[1]['throughput_rps']:,.0f}"
            + (f"; bare uvicorn echo app {echo[1]['throughput_rps']:,.0f})" if echo else ")")
        )
        cpu.append(
            f"{names[db]} {b[1]['server_cpu_ms_per_request']:.2f} ms "
            f"(no policy {free[1]['server_cpu_ms_per_request']:.2f})"
        )
        if lite is not None and db == dbs[0]:
            lat[-1] += f"; LiteLLM {lite[0]['added_p50_ms']:.2f} / {lite[0]['added_p99_ms']:.2f}"
            rps[-1] += f"; LiteLLM {lite[1]['throughput_rps']:,.0f}"
            cpu[-1] += f"; LiteLLM {lite[1]['server_cpu_ms_per_request']:.2f}"
    return [
        record.Row("LLM gateway added latency p50 / p99, c=1, budgeted path (run and day "
                   "budgets, a run per 10 calls)", "; ".join(lat), "≤ 1 ms / ≤ 5 ms"),
        record.Row("LLM gateway throughput, c=32, budgeted path", "; ".join(rps),
                   "≥ 1,500 req/s"),
        record.Row("LLM gateway server CPU per request, c=32, budgeted path", "; ".join(cpu)),
    ]  # fmt: skip


def report(mode: str, c1: dict[str, Any], c32: dict[str, Any]) -> None:
    print(f"\n== {mode}")
    print(f"{'target':<10} {'c1 p50':>9} {'c1 p99':>9} {'added p50':>10} {'added p99':>10} "
          f"{'c32 rps':>9} {'c32 p50':>9} {'c32 p99':>9} {'cpu ms/req':>10}")  # fmt: skip
    for name in c1:
        a = c1[name]
        b = c32[name]
        added = f"{a.get('added_p50_ms', 0):>10.3f} {a.get('added_p99_ms', 0):>10.3f}"
        busy = f"{b['throughput_rps']:>9.1f} {b['p50_ms']:>9.3f} {b['p99_ms']:>9.3f}"
        cpu = f"{b['server_cpu_ms_per_request']:>10.3f}"
        line = f"{name:<10} {a['p50_ms']:>9.3f} {a['p99_ms']:>9.3f} {added} {busy} {cpu}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
