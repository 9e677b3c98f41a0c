"""A `tether serve` subprocess for the MCP gateway tests, given time to start its MCP upstreams
on a loaded machine (each upstream is a Python process of its own), and always reaped."""

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
    """`.url`, `.env`, `.stop()` like tests.conftest.ServerProcess."""

    def __init__(self, home: Path, db_url: str, config: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "TETHER_HOME": str(home), "TETHER_DATABASE_URL": db_url,
                    "TETHER_PORT": str(port), "TETHER_LOG_LEVEL": "warning"}  # fmt: skip
        args = [sys.executable, "-m", "tether.cli.main", "serve", "--config", str(config)]
        self.proc = subprocess.Popen(
            args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            wait_http(self.url + "/healthz", timeout=START_TIMEOUT_S, proc=self.proc)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


@contextmanager
def serve(home: Path, db_url: str, config: Path) -> Iterator[Served]:
    server = Served(home, db_url, config)
    try:
        yield server
    finally:
        server.stop()
