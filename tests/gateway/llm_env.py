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
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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
        {"match": "[[slow]]", "output_tokens": 400, "chunk_delay_ms": 20},
        # an upstream billing far more prompt tokens than the request holds (hidden prompts)
        {"match": "[[padded]]", "input_tokens": 1000, "output_tokens": 5},
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
    # the exploit tests (test_llm_evasion.py): ~4 calls of [[big]] with max_tokens 300 fit
    "bound": """\
agent: bound
budgets:
  run: {max_cost_usd: 0.003}
tools:
  - {match: "demo.*", allow: true}
""",
    "hasty": """\
agent: hasty
budgets:
  run: {max_cost_usd: 1.0, max_duration_s: 1}
tools:
  - {match: "demo.*", allow: true}
""",
    "streamy": """\
agent: streamy
budgets:
  run: {max_cost_usd: 0.005}
""",
    "worst": """\
agent: worst
budgets:
  run: {max_cost_usd: 0.05}
""",
    "tiny": """\
agent: tiny
budgets:
  run: {max_cost_usd: 0.005}
""",
}
# an operator's margin on one model name (test_llm_worst_case.py)
MARGINS = {"fast": {"input_tokens": 2000, "percent": 50}}
# Holds expire after 3 s in every test server: streams and slow calls outlive it, so each test
# that streams also proves that a live call keeps its hold (renewed, never swept).
RESERVATION_TTL_S = 3


class MockServer:
    """The mock LLM served by uvicorn in a thread of the test process."""

    def __init__(self, script: dict[str, Any], api_key: str | None = None) -> None:
        self._serve(create_mock_app(parse_script(script), api_key=api_key))

    def _serve(self, app: Any) -> None:
        self.app = app
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


class WebhookSink(MockServer):
    """Collects the JSON bodies tether posts to its webhooks."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

        async def hook(request: Request) -> Response:
            self.received.append(await request.json())
            return Response("ok")

        self._serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])]))
        self.url = f"http://127.0.0.1:{self.port}/hook"


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
    sink = WebhookSink()
    budgets = {"margins": MARGINS}
    config = {"providers": providers, "webhooks": [{"url": sink.url}], "budgets": budgets}
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
    # every kind of key that can reach /llm, for the agent `bound` (test_llm_evasion.py)
    for scopes in ("agent,ingest", "admin,agent", "ingest,agent,admin"):
        keys[f"bound:{scopes}"] = create_key(engine, scopes=scopes, agent="bound")[1]
    keys["hasty:agent,ingest"] = create_key(engine, scopes="agent,ingest", agent="hasty")[1]
    admin = create_key(engine, scopes="admin", name="admin")[1]
    ttl = {"TETHER_BUDGETS__RESERVATION_TTL_S": str(RESERVATION_TTL_S)}
    extra_env = {"MOCK_UPSTREAM_KEY": UPSTREAM_KEY, **ttl, **(env or {})}
    server = ServerProcess(tmp / "home", db_url, config=cfg, workers=workers, extra_env=extra_env)
    return LLMEnv(server, engine, main, keys, admin, extra=[flaky, sink])


def stop_env(env: LLMEnv) -> None:
    env.server.stop()
    env.mock.stop()
    for m in env.extra:
        m.stop()
    env.engine.dispose()
