"""A throwaway local deployment for red-team and efficacy runs: tether's red-team MCP servers in
a tether.yaml, a store with an agent key and an admin key, and `tether serve` in a subprocess
(its own process group, stopped with everything it started)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from tether.redteam.world import DOMAINS

READY_TIMEOUT_S = 180.0
PERMISSIVE = """\
agent: {agent}
tools:
  - {{match: "*", allow: true}}
on_uncertain: allow
"""
# The best a policy could do before value provenance: hold egress after any untrusted read.
RUN_WIDE = """\
agent: {agent}
tools:
  - {{match: "*", allow: true}}
data_flow:
  - {{after_tag: untrusted, require_approval_for_tag: egress}}
on_uncertain: allow
"""
# open-world readers are untrusted from their annotations; shared files say so per result
SERVER_TAGS: dict[str, dict[str, list[str]]] = {"payments": {"list_invoices": ["untrusted"]}}


def env_servers() -> list[dict[str, Any]]:
    """The `mcp_servers` entries for the red-team world, one stdio server per domain."""
    out = []
    for domain in DOMAINS:
        entry: dict[str, Any] = {
            "name": {"payments": "pay"}.get(domain, domain),
            "command": [sys.executable, "-m", "tether.redteam.env_server", "--domain", domain],
        }
        if domain in SERVER_TAGS:
            entry["tags"] = SERVER_TAGS[domain]
        out.append(entry)
    return out


class Deployment:
    def __init__(self, url: str, agent_key: str, admin_key: str, db_url: str) -> None:
        self.url, self.agent_key, self.admin_key, self.db_url = url, agent_key, admin_key, db_url

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.url}/api/v1{path}",
            timeout=60,
            headers={"Authorization": f"Bearer {self.admin_key}"},
            **kw,
        )

    def apply(self, source: str) -> None:
        r = self.api("POST", "/policies", json={"source": source})
        if r.status_code not in (200, 201):
            raise RuntimeError(f"policy refused: {r.text}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def deploy(
    base: Path, agent: str, extra_config: dict[str, Any] | None = None
) -> Iterator[Deployment]:
    """tether with the red-team world on a fresh SQLite store under `base` (`extra_config`:
    more tether.yaml keys, e.g. `providers` for an LLM attacker)."""
    from tether.store.engine import make_engine
    from tether.store.keys import create_key
    from tether.store.migrate import upgrade

    base.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{base / 'tether.db'}"
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        agent_key = create_key(engine, scopes="agent", agent=agent)[1]
        admin_key = create_key(engine, scopes="admin")[1]
    finally:
        engine.dispose()
    config = base / "tether.yaml"
    settings = {"mcp_servers": env_servers(), "approval_timeout_s": 120, **(extra_config or {})}
    config.write_text(yaml.safe_dump(settings))
    port = _free_port()
    env = {**os.environ, "TETHER_HOME": str(base / "home"), "TETHER_DATABASE_URL": db_url,
           "TETHER_PORT": str(port), "TETHER_LOG_LEVEL": "warning"}  # fmt: skip
    log = (base / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "tether.cli.main", "serve", "--config",
                             str(config)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, proc, base / "serve.log")
        dep = Deployment(url, agent_key, admin_key, db_url)
        _wait_tools(dep)
        yield dep
    finally:
        _stop(proc)
        log.close()


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tether serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"tether serve did not answer within {READY_TIMEOUT_S:g}s")


def _wait_tools(dep: Deployment) -> None:
    """Until every domain's tools are in the registry (upstreams start in the background)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    servers = {e["name"] for e in env_servers()}
    while time.monotonic() < deadline:
        items = dep.api("GET", "/tools").json().get("items", [])
        if servers <= {t["server"] for t in items}:
            return
        time.sleep(0.2)
    raise TimeoutError("the red-team MCP servers did not register their tools")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def now() -> datetime:
    return datetime.now(UTC)
