"""Test harness for the LLM gateway: tether's mock LLM in a thread, and a `tether serve`
subprocess whose tether.yaml points its providers at it (plus a flaky and a dead upstream)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
import yaml
from sqlalchemy import Engine, select

from tests.conftest import ServerProcess, free_port
from tests.processes import READY_TIMEOUT_S
from tether.gateway.llm.mock import create_mock_app
from tether.gateway.llm.mock_script import parse_script
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade
from tether.store.policies import apply_policy
from tether.store.tables import budget_counters, runs, spans

UPSTREAM_KEY = "sk-upstream-only-tether-knows"

MAIN_SCRIPT: dict[str, Any] = {
    "replies": [
        {"match": "[[tool]]", "tool_calls": [{"name": "get_weather",
                                               "arguments": {"city": "Paris"}}]},
        {"match": "[[long]]", "output_tokens": 400, "chunk_delay_ms": 10},
        {"match": "[[500]]", "fault": "status", "status": 500},
        {"match": "[[timeout]]", "fault": "timeout", "hang_s": 3},
        {"match": "[[malformed]]", "fault": "malformed"},
        {"match": "[[cut]]", "fault": "disconnect", "fault_after_chunks": 5, "output_tokens": 50},
        {"match": "[[big]]", "output_tokens": 300},
    ]
}  # fmt: skip
FLAKY_SCRIPT: dict[str, Any] = {"replies": [{"fault": "status", "status": 503},
                                            {"text": "recovered after a retry"}]}  # fmt: skip

POLICIES = {
    "tight": """\
agent: tight
budgets:
  run: {max_cost_usd: 0.001}
""",
    "capped": """\
agent: capped
budgets:
  run: {max_cost_usd: 5.0}
""",
    "picky": """\
agent: picky
models: [mock-large]
""",
    "brief": """\
agent: brief
budgets:
  run: {max_duration_s: 1}
""",
}


class MockServer:
    """The mock LLM served by uvicorn in a thread of the test process."""

    def __init__(self, script: dict[str, Any], api_key: str | None = None) -> None:
        self.app = create_mock_app(parse_script(script), api_key=api_key)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="critical",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + READY_TIMEOUT_S  # a loaded machine starts threads late
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("mock LLM did not start")
            time.sleep(0.01)

    @property
    def requests(self) -> list[dict[str, Any]]:
        return list(self.app.state.mock.requests)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@dataclass
class LLMEnv:
    server: ServerProcess
    engine: Engine
    mock: MockServer
    keys: dict[str, str]
    admin: str
    extra: list[Any] = field(default_factory=list)

    @property
    def llm_url(self) -> str:
        return self.server.url + "/llm/v1"

    @property
    def anthropic_url(self) -> str:
        return self.server.url + "/llm/anthropic"

    def kill(self, run_id: str, reason: str = "stopped by a test") -> httpx.Response:
        url = f"{self.server.url}/api/v1/runs/{run_id}/kill"
        auth = {"authorization": f"Bearer {self.admin}"}
        return httpx.post(url, json={"reason": reason}, headers=auth, timeout=10)

    def spans_of(self, run_id: str) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(spans).where(spans.c.run_id == run_id)).all())

    def run(self, run_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(runs).where(runs.c.id == run_id)).one_or_none()

    def counter(self, scope: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(
                select(budget_counters).where(budget_counters.c.scope == scope)
            ).one_or_none()

    def wait_spans(self, run_id: str, n: int = 1, timeout: float = 5.0) -> list[Any]:
        return poll(lambda: (s := self.spans_of(run_id)) and len(s) >= n and s, timeout)


T = TypeVar("T")


def poll(fn: Callable[[], T], timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def new_run_id() -> str:
    return "run_t" + uuid.uuid4().hex[:20]


def start_env(
    tmp: Path, db_url: str, workers: int = 1, env: dict[str, str] | None = None
) -> LLMEnv:
    main = MockServer(MAIN_SCRIPT, api_key=UPSTREAM_KEY)
    flaky = MockServer(FLAKY_SCRIPT)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    key = {"api_key_env": "MOCK_UPSTREAM_KEY"}
    providers = [
        {"name": "mock", "base_url": main.url + "/v1", **key,
         "models": ["mock-small", "mock-large"], "max_retries": 0,
         "aliases": {"fast": "mock-small", "reasoner": "o3-mini"}},
        {"name": "mock-anthropic", "kind": "anthropic", "base_url": main.url, **key,
         "models": ["mock-small", "mock-large"]},
        {"name": "impatient", "base_url": main.url + "/v1", **key, "timeout_s": 0.3,
         "aliases": {"slow-model": "mock-small"}, "max_retries": 0},
        {"name": "flaky", "base_url": flaky.url + "/v1",
         "aliases": {"flaky-model": "mock-small"}, "max_retries": 1},
        {"name": "dead", "base_url": dead, "aliases": {"dead-model": "mock-small"},
         "max_retries": 1, "fallbacks": ["mock-small"]},
        {"name": "gone", "base_url": dead, "aliases": {"gone-model": "mock-small"},
         "max_retries": 0},
    ]  # fmt: skip
    config = {"providers": providers}
    cfg = tmp / "tether.yaml"
    cfg.write_text(yaml.safe_dump(config))
    engine = make_engine(db_url, pool_size=4)
    upgrade(engine)
    now = datetime.now(UTC)
    for source in POLICIES.values():
        apply_policy(engine, source, "test", now)
    keys = {}
    for agent in ("sdk-agent", *POLICIES):
        keys[agent] = create_key(engine, scopes="agent", agent=agent)[1]
    keys["ingest-only"] = create_key(engine, scopes="ingest", name="otlp-exporter")[1]
    admin = create_key(engine, scopes="admin", name="admin")[1]
    extra_env = {"MOCK_UPSTREAM_KEY": UPSTREAM_KEY, **(env or {})}
    server = ServerProcess(tmp / "home", db_url, config=cfg, workers=workers, extra_env=extra_env)
    return LLMEnv(server, engine, main, keys, admin, extra=[flaky])


def stop_env(env: LLMEnv) -> None:
    env.server.stop()
    env.mock.stop()
    for m in env.extra:
        m.stop()
    env.engine.dispose()
