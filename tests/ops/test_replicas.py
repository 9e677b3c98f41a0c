"""Three `tether serve` replicas on one PostgreSQL and Redis behind haproxy: budgets never
overshoot under concurrent agents, rate limits are shared, a kill on one replica cuts a stream
on another within 100 ms, an approval decided on one replica releases a call waiting on
another, MCP works through round robin, a SIGKILLed replica loses no acknowledged span, and the
metrics summed over replicas equal the ledger, and the budget holds of a SIGKILLed replica's
calls are freed by the survivors once their TTL passes."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import REDIS_URL
from tests.gateway.llm_env import MAIN_SCRIPT, UPSTREAM_KEY, MockServer, new_run_id
from tests.ops.cluster import Cluster, pg_schema
from tests.ops.promtext import total
from tests.ops.traffic import otlp_body
from tether.store.keys import create_key
from tether.store.metrics import ledger_cost_nusd
from tether.store.policies import apply_policy
from tether.store.redis_ledger import RedisLedger
from tether.store.tables import runs, spans

pytestmark = pytest.mark.slow
USD = 1_000_000_000
POLICIES = (
    "agent: spender\nbudgets:\n  day: {max_cost_usd: 0.001}\n",
    'agent: worker\ntools:\n  - {match: "billing.refund", approval: required}\n'
    '  - {match: "search.*", allow: true, rate_limit: "3/minute"}\n'
    '  - {match: "demo.lookup_customer", allow: true}\n',
    "agent: holder\nbudgets:\n  run: {max_cost_usd: 1}\n",
)
# short, so that the holds of a SIGKILLed replica's calls expire within the test; live streams
# renew theirs four times per TTL
TTL_S = 6


@pytest.fixture(scope="module", name="c")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    mock = MockServer(MAIN_SCRIPT, api_key=UPSTREAM_KEY)
    db_url, drop = pg_schema()
    config = {
        "providers": [
            {
                "name": "mock",
                "base_url": mock.url + "/v1",
                "api_key_env": "MOCK_UPSTREAM_KEY",
                "max_retries": 0,
                "models": ["mock-small", "mock-large"],
            }
        ],
        "mcp_servers": [
            {"name": "demo", "command": [sys.executable, "-m", "tether.gateway.mcp.demo_server"]}
        ],
        "budgets": {"reservation_ttl_s": TTL_S},
    }
    c = Cluster(tmp, db_url, config, env={"MOCK_UPSTREAM_KEY": UPSTREAM_KEY})
    try:
        c.start()
        assert c.engine is not None
        for source in POLICIES:
            apply_policy(c.engine, source, "test", datetime.now(UTC))
        yield c
    finally:
        c.stop()
        mock.stop()
        drop()


def _key(c: Cluster, scopes: str, agent: str | None = None) -> dict[str, str]:
    assert c.engine is not None
    return {"authorization": f"Bearer {create_key(c.engine, scopes=scopes, agent=agent)[1]}"}


def _chat(client: httpx.Client, url: str, auth: dict[str, str], run_id: str | None = None,
          content: str = "hello", stream: bool = False) -> httpx.Response:  # fmt: skip
    return client.post(f"{url}/llm/v1/chat/completions",
                       headers={**auth, "x-tether-run-id": run_id or new_run_id()},
                       json={"model": "mock-small", "max_tokens": 30, "stream": stream,
                             "messages": [{"role": "user", "content": content}]})  # fmt: skip


def test_concurrent_agents_never_overshoot_and_metrics_sum_to_the_ledger(c: Cluster) -> None:
    auth = _key(c, "agent", "spender")
    codes: list[int] = []

    def agent(_: int) -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(6):
                codes.append(_chat(client, c.url, auth).status_code)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(agent, range(8)))
    assert set(codes) <= {200, 402} and 402 in codes and 200 in codes
    assert c.engine is not None
    engine = c.engine
    read = _key(c, "read")

    def observe() -> tuple[int, int, list[str]]:
        with engine.connect() as conn:
            spent = int(conn.execute(select(func.coalesce(func.sum(runs.c.cost_nusd), 0)).where(
                runs.c.agent == "spender")).scalar_one())  # fmt: skip
        texts = [httpx.get(f"{r.url}/metrics", headers=read, timeout=30).text for r in c.replicas]
        return spent, ledger_cost_nusd(engine), texts

    # settles and spans are written off the response path: wait (bounded) until they are in
    deadline = time.monotonic() + 30
    while True:
        spent, ledger, texts = observe()
        summed = sum(total(t, "tether_cost_usd_total") for t in texts)
        mine = sum(total(t, "tether_cost_usd_total", agent="spender") for t in texts)
        agree = abs(summed - ledger / USD) <= 1e-9 and abs(mine - spent / USD) <= 1e-9
        if agree or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # no overshoot across three replicas: the settled costs stay within the day's $0.001
    assert 0 < spent <= USD // 1000
    # metrics: scrape every replica; exactly one exports the ledger, and the sums agree with it
    assert sum(total(t, "tether_ledger_exporter") for t in texts) == 1
    assert summed == pytest.approx(ledger / USD, abs=1e-9)
    assert sum(total(t, "tether_cost_usd_total", agent="spender") for t in texts) == pytest.approx(
        spent / USD, abs=1e-9)  # fmt: skip
    calls = sum(total(t, "tether_gateway_request_duration_seconds_count", outcome="ok")
                for t in texts)  # fmt: skip
    assert calls == codes.count(200)  # each call measured once, on the replica that served it


def test_rate_limits_are_shared_across_replicas(c: Cluster) -> None:
    auth = _key(c, "agent", "worker")
    with httpx.Client(timeout=30) as client:  # round robin: consecutive calls, other replicas
        out = [
            client.post(f"{c.url}/api/v1/decide", headers=auth, json={"tool": "search.web"}).json()[
                "decision"
            ]
            for _ in range(6)
        ]
    assert out == ["allow"] * 3 + ["rate_limited"] * 3


def test_kill_on_one_replica_cuts_a_stream_on_another_within_100ms(c: Cluster) -> None:
    """The kill commits on replica b; PostgreSQL's NOTIFY carries it to replica a, whose
    stream ends. Measured from the kill's answer on b (it follows the commit) to the stream's
    end on a; the kill request itself is timed apart (it is replica b's work, not the push)."""
    auth, admin = _key(c, "agent", "worker"), _key(c, "admin")
    a, b = c.replicas[0].url, c.replicas[1].url
    after_answer, requests = [], []
    for _ in range(5):
        run_id = new_run_id()
        times: list[float] = []
        with httpx.Client(timeout=30) as client, client.stream(
            "POST", f"{a}/llm/v1/chat/completions",
            headers={**auth, "x-tether-run-id": run_id},
            json={"model": "mock-small", "stream": True, "max_tokens": 500,
                  "messages": [{"role": "user", "content": "[[long]]"}]},
        ) as stream:  # fmt: skip
            lines = stream.iter_lines()
            next(lines)  # the stream is flowing on replica a

            def kill(run_id: str, times: list[float]) -> None:
                times.append(time.perf_counter())
                r = httpx.post(f"{b}/api/v1/runs/{run_id}/kill", headers=admin, timeout=30)
                assert r.status_code == 200, r.text
                times.append(time.perf_counter())

            killer = threading.Thread(target=kill, args=(run_id, times))
            killer.start()
            tail = list(lines)  # bounded: the whole stream is 4 s, the client's timeout 30 s
            ended = time.perf_counter()
            killer.join(30)
        assert any("run_killed" in line for line in tail), tail[-3:]
        # the answer and the notification race (both follow the commit): a cut seen first is 0
        after_answer.append(max(0.0, ended - times[1]))
        requests.append(times[1] - times[0])
    print(f"\nstream cut on a after the kill's answer on b: "
          f"{[round(x * 1000) for x in after_answer]} ms (kill requests "
          f"{[round(x * 1000) for x in requests]} ms)")  # fmt: skip
    # 100 ms is the target (bench/replicas.py measures it with the load average); a busy
    # two-core test machine may delay a single cut, not most of them, and none by seconds
    assert sorted(after_answer)[2] < 0.1 and max(after_answer) < 2.0, after_answer


def test_an_approval_decided_on_one_replica_releases_a_wait_on_another(c: Cluster) -> None:
    auth, admin = _key(c, "agent", "worker"), _key(c, "admin")
    a, b = c.replicas[0].url, c.replicas[2].url
    held = httpx.post(
        f"{a}/api/v1/decide",
        headers=auth,
        timeout=30,
        json={"tool": "billing.refund", "run_id": new_run_id()},
    ).json()
    assert held["decision"] == "approval_required"
    waited: dict[str, Any] = {}

    def wait() -> None:
        r = httpx.get(f"{a}/api/v1/approvals/{held['approval_id']}/wait",
                      params={"timeout_s": 20}, headers=auth, timeout=30)  # fmt: skip
        waited.update(r.json(), at=time.perf_counter())

    waiter = threading.Thread(target=wait)
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # the call is held on replica a
    decided = httpx.post(f"{b}/api/v1/approvals/{held['approval_id']}/approve", headers=admin,
                         json={"reason": "ok"}, timeout=30)  # fmt: skip
    at = time.perf_counter()
    assert decided.status_code == 200, decided.text
    waiter.join(25)
    assert waited["status"] == "approved" and waited["decided_by"]
    assert waited["at"] - at < 2.0  # released by replica a's poll of the store, not a timeout


def _holds(c: Cluster, runs_: list[str]) -> int:
    """The budget still held (nano-dollars) on these runs' counters in the shared Redis."""
    import redis.asyncio

    assert c.engine is not None
    engine = c.engine

    async def read() -> list[Any]:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            ledger = RedisLedger(client, engine)
            return [await ledger.snapshot(f"run:{r}") for r in runs_]
        finally:
            await client.aclose()

    snaps = asyncio.run(read())
    return sum(s[1].reserved_nusd for s in snaps if s is not None)


def _hold_streams(url: str, auth: dict[str, str], runs_: list[str]) -> list[threading.Thread]:
    """Long streams on `url` (one per run), each running until its replica dies."""
    flowing = threading.Barrier(len(runs_) + 1)

    def stream(run_id: str) -> None:
        try:
            with httpx.Client(timeout=60) as client, client.stream(
                "POST", f"{url}/llm/v1/chat/completions",
                headers={**auth, "x-tether-run-id": run_id},
                json={"model": "mock-small", "stream": True, "max_tokens": 500,
                      "messages": [{"role": "user", "content": "[[long]]"}]},
            ) as r:  # fmt: skip
                lines = r.iter_lines()
                next(lines)
                flowing.wait(60)
                for _ in lines:
                    pass
        except (httpx.HTTPError, threading.BrokenBarrierError):
            pass  # the replica was killed under it

    threads = [threading.Thread(target=stream, args=(r,)) for r in runs_]
    for t in threads:
        t.start()
    flowing.wait(60)  # every hold is taken and its stream is flowing
    return threads


def test_a_sigkilled_replica_loses_no_acknowledged_span_and_leaks_no_hold(c: Cluster) -> None:
    ingest = _key(c, "ingest")
    holder = _key(c, "agent", "holder")
    acked: list[tuple[str, ...]] = []
    stop = threading.Event()

    def exporter() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                body = otlp_body()
                keys = tuple(
                    s["spanId"] for s in body["resourceSpans"][0]["scopeSpans"][0]["spans"]
                )  # type: ignore[index]
                try:
                    r = client.post(f"{c.url}/v1/traces", json=body, headers=ingest)
                except httpx.HTTPError:
                    continue  # not acknowledged: the exporter would retry it
                if r.status_code == 200:
                    acked.append(keys)

    threads = [threading.Thread(target=exporter) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    # LLM streams on the replica about to die, each holding its run's budget
    held_runs = [new_run_id() for _ in range(3)]
    streams = _hold_streams(c.replicas[2].url, holder, held_runs)
    assert _holds(c, held_runs) > 0
    c.sigkill(2)  # mid-load, no shutdown: no settle, no release
    killed_at = time.monotonic()
    before = len(acked)
    deadline = time.monotonic() + 20
    while len(acked) < before + 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in [*threads, *streams]:
        t.join(15)
    assert len(acked) >= before + 20  # the survivors kept taking spans
    assert c.engine is not None
    wanted = {k for batch in acked for k in batch}
    with c.engine.connect() as conn:
        stored = {row[0] for row in conn.execute(select(spans.c.span_id).where(
            spans.c.span_id.in_(sorted(wanted))))}  # fmt: skip
        n = conn.execute(select(func.count()).select_from(spans)).scalar_one()
    assert wanted <= stored, f"{len(wanted - stored)} acknowledged spans lost"
    assert n >= len(wanted)
    # the dead replica's holds: freed by a survivor's sweep once their TTL (last renewal + 6 s)
    # passes; the sweep runs every TTL/2, so TTL + TTL/2 after the kill, plus a loaded box's slack
    bound = TTL_S * 1.5 + 30
    while (left := _holds(c, held_runs)) and time.monotonic() - killed_at < bound:
        time.sleep(0.2)
    freed_after = time.monotonic() - killed_at
    print(f"\nholds of the SIGKILLed replica freed {freed_after:.1f} s after the kill "
          f"(TTL {TTL_S} s)")  # fmt: skip
    assert left == 0, f"{left} nano-dollars still held {freed_after:.0f} s after the kill"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_mcp_through_round_robin(c: Cluster, mode: str) -> None:
    """Sessionless clients may land on any replica; sessionful (legacy) ones stick to the
    replica holding their session (haproxy keys on the mcp-session-id header)."""
    from tests.gateway.mcp.conftest import mcp_client

    key = _key(c, "agent", "worker")["authorization"].removeprefix("Bearer ")
    async with mcp_client(c.url, key, run_id=new_run_id(), mode=mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "demo.lookup_customer" in names
        for i in range(6):
            email = ("ada@example.com", "alan@example.com")[i % 2]
            result = await client.call_tool("demo.lookup_customer", {"email": email})
            assert not result.is_error, result
