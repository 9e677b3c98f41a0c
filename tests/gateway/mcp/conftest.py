"""A `tether serve` with three real upstream MCP servers (tether's demo server, mcp-server-time,
mcp-server-git on a temporary repository), policies applied, and agent keys; plus an MCP client
(the official SDK's Streamable HTTP client) that speaks to its /mcp endpoint."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import ServerProcess, free_port
from tests.processes import Spawned
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade
from tether.store.policies import apply_policy

TRIAGE_POLICY = """\
agent: triage
owner: support
tools:
  - {match: "demo.lookup_customer", allow: true}
  - {match: "demo.fetch_page", allow: true}
  - {match: "demo.send_email", approval: required}
  - {match: "demo.delete_record", allow: false, reason: "records are never deleted by agents"}
  - {match: "demo.crash", allow: true}
  - {match: "time.convert_time", allow: true, rate_limit: "3/minute"}
  - {match: "time.*", allow: true}
  - {match: "git.git_status", allow: true}
  - {match: "git.git_log", allow: true}
  - {match: "git.*", allow: false}
  - {match: "crm.*", allow: true}
  - {match: "web.lookup_customer", allow: true}
resources:
  - {match: "*:demo://customers", allow: true}
prompts:
  - {match: "demo.triage", allow: true}
data_flow:
  - {after_tag: untrusted, require_approval_for_tag: egress}
on_uncertain: deny
approval: {timeout_s: 30}
"""

READER_POLICY = """\
agent: reader
tools:
  - {match: "time.get_current_time", allow: true}
on_uncertain: deny
"""


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    run = {"cwd": path, "check": True, "capture_output": True}
    subprocess.run(["git", "init", "-q", "-b", "main"], **run)  # type: ignore[call-overload]
    (path / "README.md").write_text("hello\n")
    subprocess.run(["git", "add", "README.md"], **run)  # type: ignore[call-overload]
    subprocess.run(
        [
            "git",
            "-c",
            "user.email=t@example.com",
            "-c",
            "user.name=t",
            "commit",
            "-qm",
            "first commit",
        ],
        **run,
    )  # type: ignore[call-overload]
    return path


def write_config(
    path: Path,
    repo: Path,
    *,
    suffix: str = "",
    http_upstream: str | None = None,
    webhook: str | None = None,
) -> Path:
    demo_env = {"TETHER_DEMO_CRASHABLE": "1"}
    if suffix:
        demo_env["TETHER_DEMO_DESCRIPTION_SUFFIX"] = suffix
    config: dict[str, Any] = {
        "mcp_servers": [
            {"name": "demo", "command": [sys.executable, "-m", "tether.gateway.mcp.demo_server"],
             "env": demo_env, "tags": {"fetch_page": ["untrusted"]}},
            {"name": "time", "command": [sys.executable, "-m", "mcp_server_time",
                                         "--local-timezone", "UTC"]},
            {"name": "git", "command": [sys.executable, "-m", "mcp_server_git", "--repository",
                                        str(repo)]},
        ],
        "http_tools": [{"name": "crm.search", "url": "http://127.0.0.1:9/search",
                        "description": "Search the CRM.", "tags": ["read"], "owner": "sales"}],
        "approval_timeout_s": 30,
    }  # fmt: skip
    if http_upstream:
        config["mcp_servers"].append({"name": "web", "url": http_upstream})
    if webhook:
        config["webhooks"] = [
            {"url": webhook, "format": "json"},
            {"url": webhook + "/slack", "format": "slack"},
        ]
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Deployment:
    """A running tether with MCP upstreams, its database and the keys of two agents."""

    home: Path
    db_url: str
    config: Path
    server: ServerProcess
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def engine(self) -> Any:
        return make_engine(self.db_url)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`tether ARGS` on the same store (no TETHER_URL: the local database)."""
        env = {**self.server.env}
        env.pop("TETHER_URL", None)
        return subprocess.run([sys.executable, "-m", "tether.cli.main", *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys['admin']}"}


def prepare_store(db_url: str) -> dict[str, str]:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        now = datetime.now(UTC)
        apply_policy(engine, TRIAGE_POLICY, "test", now)
        apply_policy(engine, READER_POLICY, "test", now)
        keys = {}
        for agent in ("triage", "reader"):
            keys[agent] = create_key(engine, scopes="agent", agent=agent)[1]
        keys["admin"] = create_key(engine, scopes="admin")[1]
        return keys
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One server per test module (SQLite): starting the upstreams takes a second or two."""
    base = tmp_path_factory.mktemp("mcp")
    db_url = f"sqlite:///{base / 'tether.db'}"
    keys = prepare_store(db_url)
    port = free_port()
    http_demo = Spawned(
        [sys.executable, "-m", "tether.gateway.mcp.demo_server", "--port", str(port)],
        log_path=base / "demo-mcp.log",
    )
    try:
        http_demo.wait_ready(f"http://127.0.0.1:{port}/mcp")
        config = write_config(base / "tether.yaml", make_repo(base / "repo"),
                              http_upstream=f"http://127.0.0.1:{port}/mcp")  # fmt: skip
        server = ServerProcess(base / "home", db_url, config=config)
        try:
            yield Deployment(base / "home", db_url, config, server, keys)
        finally:
            server.stop()
    finally:
        http_demo.stop()


@asynccontextmanager
async def mcp_client(
    url: str, key: str, run_id: str | None = None, mode: str = "auto"
) -> AsyncIterator[Client]:
    """The official MCP client over Streamable HTTP, with a tether key and run header."""
    headers = {"Authorization": f"Bearer {key}"}
    if run_id:
        headers["X-Tether-Run-Id"] = run_id
    timeout = httpx2.Timeout(30, read=120)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        Client(streamable_http_client(url + "/mcp", http_client=http), mode=mode) as client,
    ):
        yield client
