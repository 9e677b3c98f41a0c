"""Evals and canaries: the cost of running a suite through tether, of a routing decision, and of
applying a rollout rule to a large history.

    .venv/bin/python bench/evals.py [--tasks 20] [--repeats 5] [--concurrency 8] [--runs 100000]

1. `tether eval run`'s runner, 20 tasks x 5 repeats at concurrency 8 and the same at
   concurrency 1, against `tether serve` with the mock LLM behind the gateway (`tether mock-llm`,
   a process of its own, as a provider is) and a policy with run budgets for the agent (the
   production path: every attempt a run, every LLM call reserved and settled), once per adapter
   kind: a callable, an HTTP endpoint, a command (a Python process per attempt), each making one
   LLM call per attempt; and `noop`, a callable that answers at once with no LLM call, whose
   attempts are tether's part alone.
   Overhead per attempt = the runner's wall time from the attempt's start to its checked answer,
   less the agent's own time (its LLM call through the gateway included), both measured inside
   the same concurrency. An attempt costs one API round trip: its finish stores the run's queued
   gateway spans, checks, records, and starts the worker's next attempt (whose run it answers);
   so an attempt's wall time runs from the finish before it (a worker's first attempt: from its
   own start request) and includes starting the next.
   On this 2-core machine, shared, concurrency 8 saturates the CPU: an attempt's wall time is
   then mostly waiting for a CPU, and where the wait falls (in the agent's LLM call or in the
   finish) decides the split between "agent" and "overhead". So beside it, free of waiting:
   tether's CPU per attempt = the server's CPU per attempt less the agent's LLM call made alone
   at the same concurrency (`llm_only`; each in a run the gateway creates) and less the idle
   server's CPU over the same time, plus the runner's own CPU (its thread's, less the adapter's
   run). `mean_attempt_ms` is concurrency x wall / attempts (Little's law). And the callable at
   concurrency 8 once more with the mock LLM answering after `--slow-llm-ms` (50): the machine
   is no longer saturated by the benchmark itself. Target: <= 5 ms median. `--kinds callable`
   runs one kind; `--profile PREFIX` records the server with py-spy (`PREFIX.c8.callable.txt`,
   raw collapsed stacks) and writes no results.
2. Route decision: `choose()` as GET /api/v1/route runs it (cache warm), and core `route()` alone,
   p50/p99 over 100,000 decisions. Target: p99 <= 200 us. The HTTP round trip is printed beside.
3. Canary evaluation over `--runs` stored runs of two versions (SQLite, 1 % with a denied tool
   call): the rule's decide(), cold (every run read) and warm (the loop's incremental count,
   after the next interval's 1,000 runs). Target: <= 1 s.

Writes bench/results/evals.json (bench/record.py) with `uptime` before and after.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
from sqlalchemy import insert
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from record import Row, load, write  # noqa: E402  (bench/record.py)
from tests.conftest import ServerProcess  # noqa: E402
from tests.processes import Spawned  # noqa: E402
from tests.store.evals_seed import insert_runs, start_rollout  # noqa: E402

from tether.cli.eval_adapters import (  # noqa: E402
    Adapter,
    AttemptContext,
    CallableAdapter,
    CommandAdapter,
    HttpAdapter,
)
from tether.cli.eval_runner import Api, EvalRequest, run_eval  # noqa: E402
from tether.config import Settings  # noqa: E402
from tether.core.rollout import route  # noqa: E402
from tether.demo.server import ThreadedServer, free_port  # noqa: E402
from tether.server.deps import State  # noqa: E402
from tether.server.rollout_rule_apply import decide  # noqa: E402
from tether.server.routes.rollouts import choose  # noqa: E402
from tether.store.engine import make_engine  # noqa: E402
from tether.store.keys import create_key  # noqa: E402
from tether.store.migrate import upgrade  # noqa: E402
from tether.store.rollouts import ArmsCache  # noqa: E402
from tether.store.tables import spans  # noqa: E402

POLICY = """\
agent: bench
models: [mock-small]
budgets:
  run: {max_cost_usd: 1.00, max_tokens: 50000, max_llm_calls: 25}
  day: {max_cost_usd: 1000}
tools:
  - {match: "*", allow: true}
"""


def _pcts(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "p50": round(statistics.median(xs), 3),
        "p95": round(xs[int(0.95 * (len(xs) - 1))], 3),
        "p99": round(xs[int(0.99 * (len(xs) - 1))], 3),
        "max": round(xs[-1], 3),
    }


_AGENT: dict[str, Any] = {}
COMMAND_AGENT = """\
import json, os, sys, urllib.request
task = json.loads(sys.stdin.read())
req = urllib.request.Request(
    os.environ["TETHER_URL"] + "/llm/v1/chat/completions",
    data=json.dumps({"model": "mock-small", "max_tokens": 50,
                     "messages": [{"role": "user", "content": str(task["input"])}]}).encode(),
    headers={"Authorization": "Bearer " + os.environ["TETHER_API_KEY"],
             "X-Tether-Run-Id": os.environ["TETHER_RUN_ID"], "Content-Type": "application/json"})
reply = json.loads(urllib.request.urlopen(req, timeout=60).read())
print(reply["choices"][0]["message"]["content"])
"""


def _ask(http: httpx.Client, run_id: str, task_input: Any) -> str:
    r = http.post(
        "/llm/v1/chat/completions",
        headers={"X-Tether-Run-Id": run_id},
        json={
            "model": "mock-small",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": str(task_input)}],
        },
    )
    r.raise_for_status()
    return str(r.json()["choices"][0]["message"]["content"])


def agent(task: dict[str, Any], ctx: AttemptContext) -> str:
    """One LLM call through the gateway in the attempt's run (one keep-alive client, as an
    agent process would hold)."""
    return _ask(_AGENT["http"], ctx.run_id, task["input"])


def noop_agent(task: dict[str, Any], ctx: AttemptContext) -> str:
    """An agent that answers at once with no LLM call: its attempts cost only tether's part."""
    return str(task["input"])


def suite_text(tasks: int, repeats: int) -> str:
    lines = [f"suite: bench\nagent: bench\nrepeats: {repeats}\ntarget_cost_usd: 0.5\ntasks:"]
    for i in range(tasks):
        lines.append(
            f"  - id: t{i}\n    input: question {i}\n    assert:\n"
            "      - {name: answered, output_contains: question}\n"
            "      - {name: one call, max_llm_calls: 1}\n"
            "      - {name: clean, no_policy_denial: true}"
        )
    return "\n".join(lines) + "\n"


def _endpoint() -> ThreadedServer:
    """The HTTP adapter's agent: an endpoint that makes the same one call."""

    async def handle(request: Request) -> PlainTextResponse:
        body = await request.json()
        run_id = request.headers["x-tether-run-id"]
        out = await anyio.to_thread.run_sync(_ask, _AGENT["http"], run_id, body["input"])
        return PlainTextResponse(out)

    app = Starlette(routes=[Route("/task", handle, methods=["POST"])])
    return ThreadedServer(app, "127.0.0.1", free_port())


def _one_kind(
    api: Api, adapter: Adapter, tasks: int, repeats: int, conc: int, server_pid: int,
    idle_cpu_ms_per_s: float, llm_cpu_ms: float,
) -> dict[str, Any]:  # fmt: skip
    seen: list[dict[str, Any]] = []
    cpu0, own0 = cpu_seconds(server_pid), _own_cpu_s()
    started = time.perf_counter()
    ev = run_eval(
        api,
        adapter,
        EvalRequest(
            source=suite_text(tasks, repeats), file="bench", version="v1", concurrency=conc
        ),
        progress=seen.append,
    )
    wall = time.perf_counter() - started
    cpu, own = cpu_seconds(server_pid) - cpu0, _own_cpu_s() - own0
    n = max(1, len(seen))
    server_cpu = cpu * 1000 / n
    # what the eval's start and finish cost the server: its CPU per attempt less the agent's
    # LLM call (measured alone) and less what the idle server spends meanwhile (its loops)
    eval_server_cpu = server_cpu - llm_cpu_ms - idle_cpu_ms_per_s * wall / n
    runner_cpu = statistics.fmean(a.get("runner_cpu_ms", math.nan) for a in seen)
    return {
        "attempts": len(seen),
        "passed": sum(bool(a["passed"]) for a in seen),
        "wall_s": round(wall, 2),
        "attempts_per_s": round(len(seen) / wall, 1),
        # Little's law: the mean time an attempt is in the system at this concurrency
        "mean_attempt_ms": round(conc * wall * 1000 / n, 1),
        "agent_ms": _pcts([a["agent_ms"] for a in seen]),
        # the runner's view: start request to checked answer, less the agent's own time (both
        # measured inside the same concurrency, so both include waiting for a CPU)
        "overhead_ms": _pcts([a["wall_ms"] - a["agent_ms"] for a in seen]),
        # the server's view: run created to attempt checked, less the agent's own time
        "server_overhead_ms": _pcts([a["duration_ms"] - a["agent_ms"] for a in seen]),
        # the server process's CPU (user + system) over the whole eval, per attempt: its start,
        # the agent's LLM call through the gateway, its finish
        "server_cpu_ms_per_attempt": round(server_cpu, 3),
        "eval_server_cpu_ms_per_attempt": round(eval_server_cpu, 3),
        # the runner's own CPU per attempt (its threads, less the adapter's run)
        "runner_cpu_ms_per_attempt": round(runner_cpu, 3),
        # tether's own work per attempt, free of waiting: the server's eval part and the runner
        "tether_cpu_ms_per_attempt": round(eval_server_cpu + runner_cpu, 3),
        # this process's CPU per attempt: the runner, and the callable's / endpoint's agent
        "bench_process_cpu_ms_per_attempt": round(own * 1000 / n, 3),
        "eval_id": ev["id"],
    }


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _idle_cpu_ms_per_s(pid: int, seconds: float = 2.0) -> float:
    """The server's CPU while nobody calls it (its background loops), per second."""
    cpu0 = cpu_seconds(pid)
    time.sleep(seconds)
    return round((cpu_seconds(pid) - cpu0) * 1000 / seconds, 3)


def _spawn_ms(n: int = 20) -> dict[str, float]:
    """What starting a Python process costs here: the command adapter's agent pays it."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import json, urllib.request"], check=True)
        out.append((time.perf_counter() - t0) * 1000)
    return _pcts(out)


def _adapter_spawn_ms(n: int = 50) -> dict[str, float]:
    """The command adapter's own part of an attempt: running a program that does nothing
    (`true`) with the attempt's environment, the task on stdin, stdout and stderr captured.
    Counted in the agent's time with the agent's start-up (it is the agent's process)."""
    adapter = CommandAdapter(["true"])
    ctx = AttemptContext(tether_url="http://127.0.0.1:1", api_key="k", run_id="run_x",
                         eval_id="eval_x", suite="bench", task_id="t0", attempt=0,
                         input="question 0")  # fmt: skip
    return _pcts([adapter.run(ctx).agent_ms for _ in range(n)])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far (Linux /proc; `tether serve --workers 1` is one
    process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _llm_only(
    http: httpx.Client, n: int, server_pid: int, idle: float, conc: int = 1
) -> dict[str, Any]:
    """The agent's one LLM call alone, outside any eval (each in a run of its own, created by
    the gateway), `conc` at a time as the eval's attempts run: its latency and the server CPU
    it costs (less the idle server's). An attempt's server CPU less this is what the eval adds:
    its start and finish, less creating the run (the gateway does that here)."""
    tag = f"{os.getpid():x}{conc}{time.monotonic_ns() % 10**6:06d}"

    def one(i: int) -> float:
        t0 = time.perf_counter()
        _ask(http, f"run_llmonly{tag}{i:06d}", f"question {i}")
        return (time.perf_counter() - t0) * 1000

    cpu0, own0 = cpu_seconds(server_pid), _own_cpu_s()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=conc) as pool:
        lat = list(pool.map(one, range(n)))
    wall = time.perf_counter() - started
    cpu = cpu_seconds(server_pid) - cpu0 - idle * wall / 1000
    return {
        "calls": n,
        "concurrency": conc,
        "calls_per_s": round(n / wall, 1),
        "ms": _pcts(lat),
        "server_cpu_ms_per_call": round(cpu * 1000 / n, 3),
        "bench_process_cpu_ms_per_call": round((_own_cpu_s() - own0) * 1000 / n, 3),
    }


class _Profile:
    """py-spy recording the server (raw collapsed stacks) while a block runs, if asked."""

    def __init__(self, path: Path | None, pid: int) -> None:
        self.path, self.pid, self.proc = path, pid, None

    def __enter__(self) -> None:
        if self.path is not None:
            spy = Path(sys.executable).with_name("py-spy")
            self.proc = subprocess.Popen(
                [str(spy), "record", "-p", str(self.pid), "-r", "250", "-f", "raw", "-o",
                 str(self.path), "--nonblocking"],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)  # py-spy attaches

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(2)  # SIGINT: py-spy writes its file and exits
            self.proc.wait(timeout=60)


def _mock_llm(tmp: Path, latency_ms: float) -> tuple[Spawned, int]:
    """The mock LLM in a process of its own, as a provider is: not sharing the runner's CPU
    (its interpreter lock) with the runner and the agents."""
    port = free_port()
    args = [sys.executable, "-m", "tether.cli.main", "mock-llm", "--port", str(port)]
    if latency_ms:
        args += ["--latency-ms", str(latency_ms)]
    mock = Spawned(args, log_path=tmp / "mock-llm.log")
    mock.wait_ready(f"http://127.0.0.1:{port}/v1/models")
    return mock, port


def bench_eval(
    tmp: Path, tasks: int, repeats: int, concurrency: int, kinds: list[str],
    profile: Path | None = None, llm_latency_ms: float = 0.0,
) -> dict[str, Any]:  # fmt: skip
    tmp.mkdir(parents=True, exist_ok=True)
    mock, mock_port = _mock_llm(tmp, llm_latency_ms)
    config = tmp / "tether.yaml"
    provider = {"name": "mock", "kind": "openai", "models": ["mock-small"],
                "base_url": f"http://127.0.0.1:{mock_port}/v1"}  # fmt: skip
    config.write_text(json.dumps({"providers": [provider]}))
    db_url = f"sqlite:///{tmp / 'eval.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    _, admin = create_key(engine, scopes="admin", name="admin")
    _, key = create_key(engine, scopes="agent,ingest", agent="bench", name="bench")
    engine.dispose()
    proc = ServerProcess(tmp / "home", db_url, config=config)
    endpoint = None
    out: dict[str, Any] = {}
    try:
        _AGENT["http"] = httpx.Client(
            base_url=proc.url, timeout=60, headers={"Authorization": f"Bearer {key}"}
        )
        httpx.post(
            proc.url + "/api/v1/policies",
            json={"source": POLICY},
            headers={"Authorization": f"Bearer {admin}"},
        ).raise_for_status()
        api = Api(proc.url, admin)
        api.agent_key = key
        script = tmp / "agent.py"
        script.write_text(COMMAND_AGENT)
        endpoint = _endpoint()
        callable_adapter = CallableAdapter("bench.evals:agent")
        callable_adapter.fn = agent  # the same function, not re-imported under another name
        noop = CallableAdapter("bench.evals:noop_agent")
        noop.fn = noop_agent
        adapters: dict[str, Adapter] = {
            "noop": noop,
            "callable": callable_adapter,
            "http": HttpAdapter(f"http://127.0.0.1:{endpoint.server.config.port}/task"),
            "command": CommandAdapter([sys.executable, str(script)]),
        }
        pid = proc.proc.pid
        _one_kind(api, callable_adapter, 4, 1, 2, pid, 0.0, 0.0)  # warm-up: imports, caches
        out["llm_latency_ms"] = llm_latency_ms
        out["server_idle_cpu_ms_per_s"] = idle = _idle_cpu_ms_per_s(pid)
        floor = []
        for _ in range(200):
            t0 = time.perf_counter()
            api.http.get("/healthz")
            floor.append((time.perf_counter() - t0) * 1000)
        # an attempt makes one API round trip: this is what one costs doing nothing
        out["round_trip_ms"] = _pcts(floor)
        # the agent's call alone at the eval's concurrency: the baseline of the eval's CPU
        out["llm_only"] = lo = _llm_only(_AGENT["http"], tasks * repeats, pid, idle, concurrency)
        for kind in kinds:
            with _Profile(Path(f"{profile}.{kind}.txt") if profile else None, pid):
                llm_cpu = 0.0 if kind == "noop" else lo["server_cpu_ms_per_call"]
                out[kind] = _one_kind(api, adapters[kind], tasks, repeats, concurrency, pid,
                                      idle, llm_cpu)  # fmt: skip
            out[kind]["load_avg"] = os.getloadavg()
        if "command" in kinds:
            out["python_spawn_ms"] = _spawn_ms()
            out["adapter_spawn_ms"] = _adapter_spawn_ms()
        rt = []
        for _ in range(200):
            t0 = time.perf_counter()
            api.call("GET", "/api/v1/route", params={"agent": "bench", "task_id": "t1"})
            rt.append((time.perf_counter() - t0) * 1000)
        out["route_http_ms"] = _pcts(rt)
    finally:
        if endpoint is not None:
            endpoint.stop()
        proc.stop()
        mock.stop()
    return out


def bench_route(tmp: Path, n: int) -> dict[str, Any]:
    db_url = f"sqlite:///{tmp / 'route.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    start_rollout(engine, "ro_bench0000000", agent="bench")
    state = State(settings=Settings(database_url=db_url), engine=engine)
    ids = [f"task-{i}" for i in range(n)]
    choose(state, "bench", "warm")
    timed = []
    for t in ids:
        t0 = time.perf_counter_ns()
        choose(state, "bench", t)
        timed.append((time.perf_counter_ns() - t0) / 1000)
    core = []
    for t in ids:
        t0 = time.perf_counter_ns()
        route("running", "ro_bench0000000", 10, "v1", "v2", t)
        core.append((time.perf_counter_ns() - t0) / 1000)
    engine.dispose()
    return {"decisions": n, "choose_us": _pcts(timed), "core_route_us": _pcts(core)}


def _canary_runs(
    start: datetime, lo: int, hi: int, step_s: float = 0.5
) -> Iterator[dict[str, Any]]:
    for i in range(lo, hi):
        at = start + timedelta(seconds=1 + (i - lo) * step_s)
        yield {
            "id": f"run_c{i:09d}",
            "agent": "bench",
            "version": "v2" if i % 10 == 0 else "v1",
            "status": "succeeded" if i % 7 else "failed",
            "started_at": at,
            "cost_nusd": 1_000_000 + i % 50,
        }


def bench_canary(tmp: Path, n: int) -> dict[str, Any]:
    """The rule over `n` stored runs: cold (a fresh cache reads them all) and warm (the loop's
    cache, after another interval's 1,000 runs arrived)."""
    db_url = f"sqlite:///{tmp / 'canary.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    start = datetime.now(UTC) - timedelta(days=2)
    ro = start_rollout(
        engine,
        "ro_canary000000",
        agent="bench",
        rule_source="target_cost_usd: 0.05\nmax_tasks: 10000000\n"
        "guardrails: {max_policy_violation_rate: 0.2}\n",
        now=start,
    )
    t0 = time.perf_counter()
    insert_runs(engine, _canary_runs(start, 0, n))
    # one run in 100 had a tool call denied (an error span with the MCP gateway's decision)
    with engine.begin() as conn:
        conn.execute(
            insert(spans),
            [
                {
                    "trace_id": f"{i:032x}",
                    "span_id": f"{i:016x}",
                    "run_id": f"run_c{i:09d}",
                    "kind": "tool",
                    "name": "crm.delete",
                    "started_at": start,
                    "status": "error",
                    "error": "denied",
                    "attributes": {"tether.decision": {"decision": "deny"}},
                }
                for i in range(0, n, 100)
            ],
        )
    load_s = time.perf_counter() - t0
    cold = []
    for _ in range(5):
        t1 = time.perf_counter()
        d = decide(engine, ro, datetime.now(UTC), ArmsCache())
        cold.append(time.perf_counter() - t1)
    cache = ArmsCache()
    decide(engine, ro, datetime.now(UTC), cache)
    warm = []
    for k in range(5):
        # the interval's traffic: runs that started (and ended) in the last few seconds
        recent = datetime.now(UTC) - timedelta(seconds=5)
        insert_runs(engine, _canary_runs(recent, n + k * 1000, n + (k + 1) * 1000, 0.004))
        t1 = time.perf_counter()
        d = decide(engine, ro, datetime.now(UTC), cache)
        warm.append(time.perf_counter() - t1)
    whole = decide(engine, ro, datetime.now(UTC))
    assert whole.reason == d.reason, (whole.reason, d.reason)  # the cache changes nothing
    engine.dispose()
    return {
        "runs": n,
        "load_s": round(load_s, 1),
        "cold_s": _pcts(cold),
        "warm_s": _pcts(warm),
        "decision": d.action,
        "reason": d.reason,
        "denied_runs": n // 100,
        "load_avg": os.getloadavg(),
    }


KINDS = ("noop", "callable", "http", "command")


def _overhead(k: dict[str, Any]) -> str:
    o = k["overhead_ms"]
    return f"p50 {o['p50']:.1f} ms, p99 {o['p99']:.1f} ms"


def _tether_cpu(k: dict[str, Any]) -> str:
    return (f"{k['tether_cpu_ms_per_attempt']:.1f} ms (server "
            f"{k['eval_server_cpu_ms_per_attempt']:.1f} + runner "
            f"{k['runner_cpu_ms_per_attempt']:.1f})")  # fmt: skip


def _rows(out: dict[str, Any], conc: int) -> list[Row]:
    e, r, c = out["eval"], out["route"], out["canary"]
    rows = []
    if "noop" in e:
        k, s = e["noop"], e["serial"]["noop"]
        rows.append(Row(
            f"eval attempt, tether's part alone (an agent that answers at once; {k['attempts']} "
            "attempts)",
            f"concurrency 1: wall p50 {s['overhead_ms']['p50']:.1f} ms, p99 "
            f"{s['overhead_ms']['p99']:.1f} ms; tether's CPU per attempt {_tether_cpu(s)}; "
            f"concurrency {conc}: wall p50 {k['overhead_ms']['p50']:.1f} ms, "
            f"{k['attempts_per_s']:.0f} attempts/s",
            "<= 5 ms",
        ))  # fmt: skip
    for kind in (k for k in KINDS if k in e and k != "noop"):
        k, s = e[kind], e["serial"][kind]
        rows.append(
            Row(
                f"eval attempt overhead, {kind} adapter ({k['attempts']} attempts)",
                f"concurrency 1: {_overhead(s)} over the agent's own p50 "
                f"{s['agent_ms']['p50']:.1f} ms, tether's CPU {_tether_cpu(s)}; concurrency "
                f"{conc}: {_overhead(k)} over the agent's own p50 {k['agent_ms']['p50']:.1f} ms "
                f"(both waiting for a CPU), tether's CPU {k['tether_cpu_ms_per_attempt']:.1f} ms",
                "<= 5 ms",
            )
        )
    if "slow_llm" in e:
        k = e["slow_llm"]["callable"]
        rows.append(Row(
            f"eval attempt overhead, callable adapter, LLM answering in "
            f"{e['slow_llm']['llm_latency_ms']:g} ms, concurrency {conc}",
            f"{_overhead(k)} over the agent's own p50 {k['agent_ms']['p50']:.1f} ms; tether's "
            f"CPU {k['tether_cpu_ms_per_attempt']:.1f} ms",
            "<= 5 ms",
        ))  # fmt: skip
    rows.append(Row("route decision `choose()`", f"p99 {r['choose_us']['p99']:.1f} us",
                    "<= 200 us"))  # fmt: skip
    rows.append(
        Row(
            f"canary rule over {c['runs']:,} stored runs (sqlite)",
            f"cold p50 {c['cold_s']['p50']:.2f} s; warm (next interval) p50 "
            f"{c['warm_s']['p50'] * 1000:.0f} ms",
            "<= 1 s",
        )
    )
    return rows


def _print_eval(e: dict[str, Any], conc: int) -> None:
    print(
        "tether's overhead per eval attempt = the runner's wall time from the attempt's start to "
        "its checked answer,\nless the agent's own time (its one LLM call through the gateway), "
        "both measured inside the same concurrency;\ntether's CPU per attempt = the server's for "
        "the eval (its CPU per attempt less the LLM call alone, less its idle rate)\n+ the "
        "runner's own (its thread's, less the adapter's run); target <= 5 ms"
    )
    head = (f"{'adapter':<9} {'conc':>4} {'n':>4} {'pass':>4} {'wall s':>6} {'att/s':>6} "
            f"{'in sys':>6} {'agent p50':>9} {'ovh p50':>8} {'ovh p99':>8} {'srv p50':>8} "
            f"{'cpu/att':>8} {'eval srv':>8} {'runner':>6} {'tether':>6} {'bench':>6} "
            f"{'load':>5}")  # fmt: skip
    print(head)
    runs = [(kind, c, k) for kind in KINDS if kind in e
            for c, k in ((1, e["serial"][kind]), (conc, e[kind]))]  # fmt: skip
    if "slow_llm" in e:
        runs.append((f"cal+{e['slow_llm']['llm_latency_ms']:g}ms", conc, e["slow_llm"]["callable"]))
    for kind, c, k in runs:
        print(
            f"{kind:<9} {c:>4} {k['attempts']:>4} {k['passed']:>4} {k['wall_s']:>6.2f} "
            f"{k['attempts_per_s']:>6.1f} {k['mean_attempt_ms']:>6.1f} "
            f"{k['agent_ms']['p50']:>9.2f} {k['overhead_ms']['p50']:>8.2f} "
            f"{k['overhead_ms']['p99']:>8.2f} {k['server_overhead_ms']['p50']:>8.2f} "
            f"{k['server_cpu_ms_per_attempt']:>8.2f} {k['eval_server_cpu_ms_per_attempt']:>8.2f} "
            f"{k['runner_cpu_ms_per_attempt']:>6.2f} {k['tether_cpu_ms_per_attempt']:>6.2f} "
            f"{k['bench_process_cpu_ms_per_attempt']:>6.2f} {k['load_avg'][0]:>5.1f}"
        )  # fmt: skip
    print(
        "  (ms; in sys = conc x wall / n, the mean attempt by Little's law; srv = the server's "
        "view, run created to checked, less the agent's time;\n   cpu/att = server CPU per "
        "attempt; eval srv = its eval part; runner = the runner's CPU; tether = eval srv + "
        "runner;\n   bench = this process's CPU per attempt: runner, callable agent, endpoint)"
    )
    for label, x in (("concurrency 1", e["serial"]), (f"concurrency {conc}", e)):
        lo = x["llm_only"]
        print(f"  {label}: the agent's LLM call alone p50 {lo['ms']['p50']} ms "
              f"({lo['calls_per_s']}/s), server CPU {lo['server_cpu_ms_per_call']} ms per call, "
              f"this process {lo['bench_process_cpu_ms_per_call']} ms; a bare API round trip "
              "(GET /healthz) "
              f"p50 {x['round_trip_ms']['p50']} ms; idle server "
              f"{x['server_idle_cpu_ms_per_s']} ms CPU/s")  # fmt: skip
    if "python_spawn_ms" in e:
        print(f"  a Python process start costs p50 {e['python_spawn_ms']['p50']} ms, the command "
              f"adapter running `true` p50 {e['adapter_spawn_ms']['p50']} ms (both in the agent's "
              "time: it is the agent's process)")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--decisions", type=int, default=100_000)
    p.add_argument(
        "--slow-llm-ms",
        type=float,
        default=50.0,
        help="also run the callable at --concurrency with the mock LLM answering "
        "after this many ms (0: not)",
    )
    p.add_argument("--kinds", default=",".join(KINDS), help="adapter kinds to run, comma-separated")
    p.add_argument("--profile", type=Path, default=None,
                   help="py-spy the server during each kind's run: PROFILE.<conc>.<kind>.txt "
                   "(raw collapsed stacks); do not record such a run")  # fmt: skip
    p.add_argument("--no-write", action="store_true", help="print only; leave results/ alone")
    args = p.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if bad := [k for k in kinds if k not in KINDS]:
        p.error(f"unknown adapter kind(s) {bad}; choose from {list(KINDS)}")
    before = load()
    started = uptime()
    prof = args.profile
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ev = bench_eval(tmp / "c", args.tasks, args.repeats, args.concurrency, kinds,
                        Path(f"{prof}.c{args.concurrency}") if prof else None)  # fmt: skip
        # the same attempts at concurrency 1: tether's own cost per attempt without queueing
        ev["serial"] = bench_eval(tmp / "s", args.tasks, args.repeats, 1, kinds,
                                  Path(f"{prof}.c1") if prof else None)  # fmt: skip
        if args.slow_llm_ms and "callable" in kinds:
            # the same at concurrency 8 with an LLM that takes as long as a fast real one: the
            # machine is no longer saturated, so the overhead is tether's and not the queue's
            ev["slow_llm"] = bench_eval(
                tmp / "l",
                args.tasks,
                args.repeats,
                args.concurrency,
                ["callable"],
                llm_latency_ms=args.slow_llm_ms,
            )
        out: dict[str, Any] = {
            "eval": ev,
            "route": bench_route(tmp, args.decisions),
            "canary": bench_canary(tmp, args.runs),
            "uptime_before": started,
            "uptime_after": uptime(),
        }
    e, r, c = out["eval"], out["route"], out["canary"]
    _print_eval(e, args.concurrency)
    print(
        f"route: choose() p50 {r['choose_us']['p50']} us, p99 {r['choose_us']['p99']} us "
        f"(target <= 200 us); core route() p99 {r['core_route_us']['p99']} us; over HTTP p50 "
        f"{e['route_http_ms']['p50']} ms"
    )
    print(
        f"canary: the rule over {c['runs']} runs: cold p50 {c['cold_s']['p50']} s, max "
        f"{c['cold_s']['max']} s; warm p50 {c['warm_s']['p50']} s (target <= 1 s): "
        f"{c['decision']}"
    )
    print(f"uptime before: {started}\nuptime after:  {out['uptime_after']}")
    if args.no_write or args.profile:
        return
    command = "bench/evals.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items()
        if v != p.get_default(k)
    )  # fmt: skip
    write("evals", command=command, figures=out, rows=_rows(out, args.concurrency),
          load_before=before)  # fmt: skip


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
