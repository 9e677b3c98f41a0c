"""Benchmark: what the SDK costs the agent per run (one run span, one tool call, one LLM record).

Run: `.venv/bin/python bench/sdk.py` (prints p50/p99 microseconds per run and exported spans/s,
writes bench/results/sdk.json). Three cases: tether unreachable (spans dropped and counted),
a live `tether serve` on SQLite (spans exported in the background), and in-memory capture.
The agent-side cost must stay far below an LLM call's latency whether tether is up or down.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import tether
from tether.testing import capture

RUNS = 5_000


@tether.tool(name="crm.lookup")
def lookup(email: str) -> dict[str, str]:
    return {"email": email, "plan": "pro"}


def one_run(i: int) -> None:
    with tether.run(agent="bench", task_id=f"T-{i}", user="u", version="v1", input="q") as run:
        lookup("a@b.c")
        tether.record_llm(model="gpt-4o-mini", input="q", output="a", input_tokens=100,
                          output_tokens=20)  # fmt: skip
        run.set_output("done")


def measure(runs: int) -> dict[str, float]:
    times = []
    for i in range(runs):
        t = time.perf_counter_ns()
        one_run(i)
        times.append((time.perf_counter_ns() - t) / 1000)
    times.sort()
    return {
        "runs": runs,
        "p50_us": round(statistics.median(times), 1),
        "p99_us": round(times[int(len(times) * 0.99)], 1),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def live_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "TETHER_HOME": str(home),
        "TETHER_PORT": str(port),
        "TETHER_DATABASE_URL": f"sqlite:///{home / 'bench.db'}",
        "TETHER_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen([sys.executable, "-m", "tether.cli.main", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("tether serve did not start")


def main() -> None:
    results: dict[str, object] = {"python": platform.python_version()}

    tether.init(f"http://127.0.0.1:{free_port()}", max_queue=2048)
    results["tether_down"] = {**measure(RUNS), **tether.sdk_stats()}
    tether.shutdown()

    with capture():
        results["in_memory_capture"] = measure(RUNS)

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = live_server(Path(tmp))
        try:
            tether.init(url, max_queue=100_000)
            start = time.perf_counter()
            stats = measure(RUNS)
            tether.flush(60)
            elapsed = time.perf_counter() - start
            exported = tether.sdk_stats()
            stats.update(exported)
            stats["exported_spans_per_s"] = round(exported["exported"] / elapsed)
            results["tether_serve_sqlite"] = stats
            tether.shutdown()
        finally:
            proc.terminate()
            proc.wait(10)

    for case in ("tether_down", "in_memory_capture", "tether_serve_sqlite"):
        print(f"{case:22s} {json.dumps(results[case])}")
    out = Path(__file__).parent / "results" / "sdk.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
