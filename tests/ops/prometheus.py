"""A real Prometheus (Debian's package) in a subprocess: scrapes the given targets every
second with a bearer key, loads tether's rules, answers PromQL over its HTTP API."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import free_port, wait_http

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "tether.rules.yaml"


class Prometheus:
    def __init__(self, tmp: Path, targets: list[str], key: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: `make ops-tools` installs Debian's package"
        (tmp / "key").write_text(key)
        shutil.copy(RULES, tmp / "tether.rules.yaml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["tether.rules.yaml"],
            "scrape_configs": [{
                "job_name": "tether", "scrape_interval": "1s", "scrape_timeout": "900ms",
                "authorization": {"credentials_file": str(tmp / "key")},
                "static_configs": [{"targets": targets}],
            }],
        }  # fmt: skip
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--web.enable-lifecycle"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=tmp,
        )  # fmt: skip
        wait_http(self.url + "/-/ready", timeout=60, proc=self.proc)

    def query(self, expr: str) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body: dict[str, Any] = r.json()
        return body

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            body = self.query(expr)
            assert body["status"] == "success", f"{expr}: {body}"
            if body["data"]["result"]:
                return list(body["data"]["result"])
            if time.monotonic() > deadline:
                raise AssertionError(f"no data for {expr} within {timeout}s")
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()
