"""N `tether serve` replicas on one PostgreSQL schema and one Redis, behind Debian's haproxy
(round robin; MCP requests that carry an `mcp-session-id` stick to the replica that opened the
session). Used by the replica tests and bench/replicas.py."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, create_engine, text

from tests.conftest import PG_URL, REDIS_URL, ServerProcess, free_port, wait_http
from tether.store.engine import make_engine
from tether.store.migrate import upgrade

HAPROXY_CFG = """\
global
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  retries 2
  option redispatch
frontend tether
  bind 127.0.0.1:{port}
  default_backend replicas
backend replicas
  balance roundrobin
  # sessionful (legacy) MCP clients stay on the replica that holds their session
  stick-table type string len 128 size 100k expire 30m
  stick on req.hdr(mcp-session-id)
  stick store-response res.hdr(mcp-session-id)
{servers}
"""


def pg_schema() -> tuple[str, Any]:
    """A fresh PostgreSQL schema URL and a function that drops it."""
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return f"{PG_URL}?options=-csearch_path%3D{schema}", drop


@dataclass
class Cluster:
    tmp: Path
    db_url: str
    config: dict[str, Any]
    n: int = 3
    env: dict[str, str] = field(default_factory=dict)
    replicas: list[ServerProcess] = field(default_factory=list)
    engine: Engine | None = None
    lb: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self) -> Cluster:
        self.engine = make_engine(self.db_url, pool_size=4)
        upgrade(self.engine)  # once, before the replicas race to
        cfg = self.tmp / "tether.yaml"
        cfg.write_text(yaml.safe_dump(self.config))
        slots: list[ServerProcess | BaseException | None] = [None] * self.n

        def boot(i: int) -> None:
            try:
                slots[i] = ServerProcess(
                    self.tmp / f"r{i}",
                    self.db_url,
                    config=cfg,
                    extra_env={
                        "TETHER_REDIS_URL": REDIS_URL,
                        "TETHER_REPLICA_ID": f"r{i}",
                        "TETHER_METRICS_CACHE_S": "0",
                        **self.env,
                    },
                    ready_timeout=300,
                )  # three cold starts at once on a loaded 2-core box
            except BaseException as exc:  # reported below, after every boot thread is done
                slots[i] = exc

        threads = [threading.Thread(target=boot, args=(i,)) for i in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.replicas = [s for s in slots if isinstance(s, ServerProcess)]
        failed = [s for s in slots if not isinstance(s, ServerProcess)]
        if failed:
            self.stop()
            raise RuntimeError(f"a replica did not start: {failed[0]!r}")
        self._start_lb()
        return self

    def _start_lb(self) -> None:
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        assert Path(haproxy).exists(), "haproxy is missing: `make ops-tools` installs it"
        port = free_port()
        servers = "\n".join(f"  server r{i} 127.0.0.1:{r.port} check inter 300ms fall 2 rise 1"
                            for i, r in enumerate(self.replicas))  # fmt: skip
        cfg = self.tmp / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(port=port, servers=servers))
        self.lb = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        wait_http(self.url + "/healthz", timeout=30, proc=self.lb)

    def sigkill(self, i: int) -> None:
        """Kills replica i at once (no shutdown, no flush), as a crashed pod."""
        proc = self.replicas[i].proc
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        if self.lb is not None:
            self.lb.terminate()
            self.lb.wait(10)
        for r in self.replicas:
            if r.proc.poll() is None:
                r.stop()
            elif r.proc.stdout:
                r.proc.stdout.close()
        if self.engine is not None:
            self.engine.dispose()
