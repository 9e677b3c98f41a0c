"""Evals and canaries: the cost of running a suite through tether, of a routing decision, and of
applying a rollout rule to a large history.

    .venv/bin/python bench/evals.py [--tasks 20] [--repeats 5] [--concurrency 8] [--runs 100000]

1. `tether eval run`'s runner, 20 tasks x 5 repeats at concurrency 8 and the same at
   concurrency 1, against `tether serve` with the mock LLM behind the gateway and a policy
   with run budgets for the agent (the production path: every attempt a run, every LLM call
   reserved and settled), once per adapter kind: a callable, an HTTP endpoint, a command (a
   Python process per attempt). Each agent makes one LLM call per attempt.
   Tether's overhead per attempt = the runner's wall time from the attempt's start to its
   checked answer, less the agent's own time (its LLM call through the gateway included).
   An attempt costs one API round trip: its finish stores the run's queued gateway spans,
   checks, records, and starts the worker's next attempt (whose run it answers); so an
   attempt's wall time runs from the finish before it (a worker's first attempt: from its own
   start request) and includes starting the next. Beside it: the server's view (run created to
   checked), the server process's CPU per attempt, and the agent's LLM call made alone (its
   latency and server CPU). Target: <= 5 ms median. `--kinds callable` runs one kind;
   `--profile PREFIX` records the server with py-spy (`PREFIX.c8.callable.txt`, raw collapsed
   stacks) and writes no results.
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
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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
from tests.e2e.mock_upstream import mock_provider  # noqa: E402
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
from tether.gateway.llm.mock import create_mock_app  # noqa: E402
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
    api: Api, adapter: Adapter, tasks: int, repeats: int, conc: int, server_pid: int
) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []
    cpu0 = cpu_seconds(server_pid)
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
    cpu = cpu_seconds(server_pid) - cpu0
    return {
        "attempts": len(seen),
        "passed": sum(bool(a["passed"]) for a in seen),
        "wall_s": round(wall, 2),
        "attempts_per_s": round(len(seen) / wall, 1),
        "agent_ms": _pcts([a["agent_ms"] for a in seen]),
        # the runner's view: start request to checked answer, less the agent's own time
        "overhead_ms": _pcts([a["wall_ms"] - a["agent_ms"] for a in seen]),
        # the server's view: run created to attempt checked, less the agent's own time
        "server_overhead_ms": _pcts([a["duration_ms"] - a["agent_ms"] for a in seen]),
        # the server process's CPU (user + system) over the whole eval, per attempt: its start,
        # the agent's LLM call through the gateway, its finish
        "server_cpu_ms_per_attempt": round(cpu * 1000 / max(1, len(seen)), 3),
        "eval_id": ev["id"],
    }


def _spawn_ms(n: int = 20) -> dict[str, float]:
    """What starting a Python process costs here: the command adapter's agent pays it."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import json, urllib.request"], check=True)
        out.append((time.perf_counter() - t0) * 1000)
    return _pcts(out)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far (Linux /proc; `tether serve --workers 1` is one
    process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _llm_only(http: httpx.Client, n: int, server_pid: int) -> dict[str, Any]:
    """The agent's one LLM call alone, outside any eval (each in a run of its own, created by
    the gateway): its latency and the server CPU it costs. An attempt's server CPU less this is
    what the eval's start and finish cost."""
    lat = []
    cpu0 = cpu_seconds(server_pid)
    for i in range(n):
        run_id = f"run_llmonly{os.getpid():x}{i:08d}"
        t0 = time.perf_counter()
        _ask(http, run_id, f"question {i}")
        lat.append((time.perf_counter() - t0) * 1000)
    cpu = cpu_seconds(server_pid) - cpu0
    return {"calls": n, "ms": _pcts(lat), "server_cpu_ms_per_call": round(cpu * 1000 / n, 3)}


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


def bench_eval(
    tmp: Path, tasks: int, repeats: int, concurrency: int, kinds: list[str],
    profile: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    tmp.mkdir(parents=True, exist_ok=True)
    mock = ThreadedServer(create_mock_app(), "127.0.0.1", free_port())
    config = tmp / "tether.yaml"
    config.write_text(json.dumps({"providers": [mock_provider(mock)]}))
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
        adapters: dict[str, Adapter] = {
            "callable": callable_adapter,
            "http": HttpAdapter(f"http://127.0.0.1:{endpoint.server.config.port}/task"),
            "command": CommandAdapter([sys.executable, str(script)]),
        }
        pid = proc.proc.pid
        _one_kind(api, callable_adapter, 4, 1, 2, pid)  # warm-up: imports, caches, connections
        floor = []
        for _ in range(200):
            t0 = time.perf_counter()
            api.http.get("/healthz")
            floor.append((time.perf_counter() - t0) * 1000)
        # an attempt makes one API round trip: this is what one costs doing nothing
        out["round_trip_ms"] = _pcts(floor)
        out["llm_only"] = _llm_only(_AGENT["http"], 100, pid)
        for kind in kinds:
            with _Profile(Path(f"{profile}.{kind}.txt") if profile else None, pid):
                out[kind] = _one_kind(api, adapters[kind], tasks, repeats, concurrency, pid)
            out[kind]["load_avg"] = os.getloadavg()
        if "command" in kinds:
            out["python_spawn_ms"] = _spawn_ms()
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


KINDS = ("callable", "http", "command")


def _overhead(k: dict[str, Any]) -> str:
    o = k["overhead_ms"]
    return f"p50 {o['p50']:.1f} ms, p99 {o['p99']:.1f} ms"


def _rows(out: dict[str, Any], conc: int) -> list[Row]:
    e, r, c = out["eval"], out["route"], out["canary"]
    rows = []
    for kind in (k for k in KINDS if k in e):
        k, s = e[kind], e["serial"][kind]
        rows.append(
            Row(
                f"eval attempt overhead, {kind} adapter ({k['attempts']} attempts)",
                f"concurrency 1: {_overhead(s)} over the agent's own p50 "
                f"{s['agent_ms']['p50']:.1f} ms; concurrency {conc}: {_overhead(k)}; server "
                f"CPU {s['server_cpu_ms_per_attempt']:.1f} ms per attempt (the agent's LLM "
                f"call alone {e['serial']['llm_only']['server_cpu_ms_per_call']:.1f} ms)",
                "<= 5 ms",
            )
        )
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
        "its checked answer,\nless the agent's own time (its one LLM call through the gateway); "
        "target <= 5 ms"
    )
    head = (f"{'adapter':<9} {'conc':>4} {'n':>4} {'pass':>4} {'wall s':>6} {'agent p50':>9} "
            f"{'ovh p50':>8} {'ovh p99':>8} {'srv p50':>8} {'cpu/att':>8} {'load':>5}")  # fmt: skip
    print(head)
    for kind in (k for k in KINDS if k in e):
        for c, k in ((1, e["serial"][kind]), (conc, e[kind])):
            print(
                f"{kind:<9} {c:>4} {k['attempts']:>4} {k['passed']:>4} {k['wall_s']:>6.2f} "
                f"{k['agent_ms']['p50']:>9.2f} {k['overhead_ms']['p50']:>8.2f} "
                f"{k['overhead_ms']['p99']:>8.2f} {k['server_overhead_ms']['p50']:>8.2f} "
                f"{k['server_cpu_ms_per_attempt']:>8.2f} {k['load_avg'][0]:>5.1f}"
            )  # fmt: skip
    print("  (ms; srv = the server's view, run created to checked, less the agent's time; cpu/att "
          "= server CPU per attempt)")  # fmt: skip
    for label, x in (("concurrency 1", e["serial"]), (f"concurrency {conc}", e)):
        lo = x["llm_only"]
        print(f"  {label}: the agent's LLM call alone p50 {lo['ms']['p50']} ms, server CPU "
              f"{lo['server_cpu_ms_per_call']} ms per call; a bare API round trip (GET /healthz) "
              f"p50 {x['round_trip_ms']['p50']} ms")  # fmt: skip
    if "python_spawn_ms" in e:
        print(f"  a Python process start costs p50 {e['python_spawn_ms']['p50']} ms (the command "
              "adapter's agent pays it; counted as the agent's time)")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--decisions", type=int, default=100_000)
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
