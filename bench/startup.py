"""Benchmark: how long people wait for the `tether` command and for `tether serve`.

Run: `.venv/bin/python bench/startup.py [--runs 15] [--serve-runs 5]` (writes
bench/results/startup.json). Measures, through the installed console script:

- `tether --help`;
- `tether runs list` against a running server (TETHER_URL + an admin key), as a table and `--json`;
- `tether serve` from launch to the first 200 on /healthz (listening, alive), on an
  already-migrated SQLite database (a restart), with the first launch (which also creates and
  migrates it) beside it; and to the first 200 on /readyz (the app loaded behind the socket,
  the database migrated, the gateways started).

Each figure is the median wall-clock time, with the CPU time the process used beside it: on a
shared machine the wall clock moves with the load average (recorded in the JSON), CPU time much
less. Targets: <= 300 ms for the two commands, <= 1.5 s to /healthz.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from record import Row, load, write

TETHER = str(Path(sys.executable).with_name("tether"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of a command that must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, timeout=120)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    walls = sorted(w for w, _ in samples)
    return {
        "runs": len(samples),
        "wall_p50_s": round(statistics.median(walls), 4),
        "wall_min_s": round(walls[0], 4),
        "cpu_p50_s": round(statistics.median(c for _, c in samples), 4),
    }


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


class Serve:
    """`tether serve` on a free port; `ready_s` is launch to the first 200 on /healthz (alive,
    listening), `readyz_s` to the first 200 on /readyz (app loaded, migrated, gateways up)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        started = time.perf_counter()
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [TETHER, "serve", "--port", str(self.port)], env=env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.ready_s = self._until("/healthz", started, log)
        self.cpu_s = process_cpu(self.proc.pid)
        self.readyz_s = self._until("/readyz", started, log)
        self.readyz_cpu_s = process_cpu(self.proc.pid)

    def _until(self, path: str, started: float, log: Path) -> float:
        """Seconds from launch to the first 200 on `path`."""
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"tether serve exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{path} did not answer in 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.005)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each CLI command")
    parser.add_argument("--serve-runs", type=int, default=5, help="restarts of tether serve")
    args = parser.parse_args()
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="tether-startup-") as tmp:
        home = Path(tmp)
        env = {**os.environ, "TETHER_HOME": str(home), "TETHER_LOG_LEVEL": "warning"}
        for key in ("TETHER_URL", "TETHER_API_KEY", "TETHER_DATABASE_URL", "TETHER_CONFIG"):
            env.pop(key, None)
        log = home / "serve.log"

        help_runs = [timed([TETHER, "--help"], env) for _ in range(args.runs)]

        first = Serve(env, log)  # creates and migrates $TETHER_HOME/tether.db
        first.stop()
        restarts: list[tuple[float, float]] = []
        readies: list[tuple[float, float]] = []
        for _ in range(args.serve_runs):
            s = Serve(env, log)
            restarts.append((s.ready_s, s.cpu_s))
            readies.append((s.readyz_s, s.readyz_cpu_s))
            s.stop()

        made = subprocess.run([TETHER, "keys", "create", "--scopes", "admin", "--json"],
                              env=env, capture_output=True, check=True)  # fmt: skip
        key = json.loads(made.stdout)["key"]
        server = Serve(env, log)
        try:
            auth = {"Authorization": f"Bearer {key}"}
            for i in range(20):
                body = {"agent": "bench", "task_id": f"T-{i}"}
                httpx.post(server.url + "/api/v1/runs", json=body, headers=auth).raise_for_status()
            remote = {**env, "TETHER_URL": server.url, "TETHER_API_KEY": key, "COLUMNS": "160"}
            table_runs = [timed([TETHER, "runs", "list"], remote) for _ in range(args.runs)]
            json_runs = [
                timed([TETHER, "runs", "list", "--json"], remote) for _ in range(args.runs)
            ]
        finally:
            server.stop()

    figures = {
        "help": summary(help_runs),
        "runs_list_remote_table": summary(table_runs),
        "runs_list_remote_json": summary(json_runs),
        "serve_to_healthz_restart": summary(restarts),
        "serve_to_readyz_restart": summary(readies),
        "serve_to_healthz_first_launch": {
            "wall_s": round(first.ready_s, 4),
            "cpu_s": round(first.cpu_s, 4),
            "readyz_wall_s": round(first.readyz_s, 4),
        },
    }
    for name, fig in figures.items():
        print(f"{name:32s} {json.dumps(fig)}")
    h, t, j, r, ry = (figures[k] for k in ("help", "runs_list_remote_table",
                                           "runs_list_remote_json", "serve_to_healthz_restart",
                                           "serve_to_readyz_restart"))  # fmt: skip

    def ms(x: float) -> str:
        return f"{x * 1000:.0f} ms"

    rows = [
        Row("`tether --help`", f"p50 {ms(h['wall_p50_s'])} wall, {ms(h['cpu_p50_s'])} CPU",
            "≤ 300 ms"),
        Row("`tether runs list` against a remote server (table / `--json`)",
            f"p50 {ms(t['wall_p50_s'])} / {ms(j['wall_p50_s'])} wall, "
            f"{ms(t['cpu_p50_s'])} / {ms(j['cpu_p50_s'])} CPU", "≤ 300 ms"),
        Row("`tether serve` launch to `/healthz` 200 (restart; first launch migrates)",
            f"p50 {r['wall_p50_s']:.2f} s wall, {r['cpu_p50_s']:.2f} s CPU; first "
            f"{first.ready_s:.2f} s", "≤ 1.5 s"),
        Row("`tether serve` launch to `/readyz` 200 (app loaded behind the socket, gateways up)",
            f"p50 {ry['wall_p50_s']:.2f} s wall, {ry['cpu_p50_s']:.2f} s CPU; first "
            f"{first.readyz_s:.2f} s", "(no target)"),
    ]  # fmt: skip
    write("startup", command="bench/startup.py", figures=figures, rows=rows,
          load_before=load_before)  # fmt: skip


if __name__ == "__main__":
    main()
