"""A `tether serve` subprocess for the governance end-to-end tests, given time to start its
MCP upstreams on a loaded machine (each is a Python process), and always reaped."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port, wait_http

START_TIMEOUT_S = 120.0


class Served:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], env: dict[str, str]) -> None:
        self.url, self.proc, self.env = url, proc, env


@contextmanager
def serve(home: Path, db_url: str, config: Path) -> Iterator[Served]:
    port = free_port()
    env = {**os.environ, "TETHER_HOME": str(home), "TETHER_DATABASE_URL": db_url,
           "TETHER_PORT": str(port), "TETHER_LOG_LEVEL": "warning"}  # fmt: skip
    args = [sys.executable, "-m", "tether.cli.main", "serve", "--config", str(config)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz", timeout=START_TIMEOUT_S, proc=proc)
        yield Served(url, proc, env)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout:
            proc.stdout.close()
