"""OTLP export: every stored span reaches a real receiving OTLP/HTTP server exactly once, with
GenAI semantic conventions and tether's attribution; a receiver that is down or erroring loses
nothing (its batch is retried), and a `tether serve` ships both ingested and gateway spans."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select

from tests.conftest import free_port
from tests.gateway.llm_env import LLMEnv, new_run_id, poll, start_env, stop_env
from tests.ops.otlp_receiver import Receiver
from tests.ops.traffic import otlp_body
from tether.config import OtlpExportConfig, load_settings
from tether.core.records import RunAttribution, SpanRecord
from tether.server.deps import State
from tether.server.export_otlp import ExportFailedError, OtlpExporter
from tether.store.ingest import write_spans
from tether.store.tables import span_exports, spans


def make_run(db: Engine, i: int, *, agent: str = "triage", version: str = "v1",
             user: str = "alice", cost: int = 1000, task: str | None = None) -> None:  # fmt: skip
    """A run with a root agent span and one LLM child, ingested now (as a live agent's)."""
    now = datetime.now(UTC)
    who = RunAttribution(agent=agent, version=version, task_id=task or f"T-{i}", user=user)
    trace = f"{i:032x}"
    root = SpanRecord(trace_id=trace, span_id=f"{i:016x}", run_id=f"run_{trace}", kind="agent",
                      name=agent, started_at=now, ended_at=now, is_root=True, status="ok",
                      attribution=who)  # fmt: skip
    llm = SpanRecord(trace_id=trace, span_id=f"{i + 1000:016x}", parent_id=root.span_id,
                     run_id=root.run_id, kind="llm", name="chat", started_at=now, ended_at=now,
                     model="gpt-4o-mini", input_tokens=100, output_tokens=20, cost_nusd=cost,
                     status="ok", attribution=who)  # fmt: skip
    write_spans(db, [root, llm], now=now, source="otlp")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(free_port())
    yield r
    r.stop()


def _exporter(tmp: Path, db_url: str, db: Engine, url: str, batch: int = 3) -> OtlpExporter:
    settings = load_settings(home=tmp / "home", database_url=db_url, replica_id="r1")
    return OtlpExporter(State(settings=settings, engine=db),
                        OtlpExportConfig(endpoint=url, batch=batch, timeout_s=2))  # fmt: skip


def _drain(exporter: OtlpExporter) -> int:
    total = 0
    while (n := exporter.step()) > 0:
        total += n
    return total


def _count(db: Engine, table: object) -> int:
    with db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_down_then_up_then_more_exactly_once(
    tmp_path: Path, db_url: str, db: Engine, receiver: Receiver
) -> None:
    for i in range(1, 4):
        make_run(db, i, agent="triage", version="v2", user="alice", cost=2_000_000, task=f"T-{i}")
    exporter = _exporter(tmp_path, db_url, db, receiver.url)
    with pytest.raises(ExportFailedError, match="cannot reach"):
        exporter.step()  # nobody listens yet
    assert _count(db, span_exports) == 0
    receiver.start()
    receiver.fail_with = 503
    with pytest.raises(ExportFailedError, match="HTTP 503"):
        exporter.step()
    assert _count(db, span_exports) == 0 and receiver.spans == []
    receiver.fail_with = None
    assert _drain(exporter) == 6  # 3 runs x (root + LLM), in batches of 3
    assert sorted(receiver.keys()) == sorted(set(receiver.keys())) and len(receiver.spans) == 6
    llm = next(s for s in receiver.spans if s["name"] == "chat")
    a = llm["attributes"]
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "gpt-4o-mini"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (100, 20)
    assert (a["tether.agent"], a["tether.agent_version"], a["tether.user"]) == (
        "triage", "v2", "alice")  # fmt: skip
    assert a["tether.task_id"].startswith("T-") and a["tether.cost_usd"] == pytest.approx(0.002)
    assert llm["resource"]["service.name"] == "triage"
    # the receiver goes away; new spans wait in the store and go out once it is back
    receiver.stop()
    make_run(db, 9, agent="writer")
    with pytest.raises(ExportFailedError):
        exporter.step()
    receiver.start()
    assert _drain(exporter) == 2
    assert len(receiver.spans) == 8 == len(set(receiver.keys())) == _count(db, span_exports)
    assert _drain(exporter) == 0  # nothing twice


def test_a_second_replica_does_not_export_while_the_first_holds_the_lease(
    tmp_path: Path, db_url: str, db: Engine, receiver: Receiver
) -> None:
    receiver.start()
    make_run(db, 1)
    first = _exporter(tmp_path, db_url, db, receiver.url)
    settings = load_settings(home=tmp_path / "h2", database_url=db_url, replica_id="r2")
    second = OtlpExporter(State(settings=settings, engine=db),
                          OtlpExportConfig(endpoint=receiver.url))  # fmt: skip
    assert first.step() == 2
    make_run(db, 2)
    assert second.step() == 0  # r1 holds export.otlp
    assert _drain(first) == 2 and len(receiver.spans) == 4


@pytest.fixture
def served(tmp_path: Path, receiver: Receiver) -> Iterator[LLMEnv]:
    env = start_env(tmp_path, f"sqlite:///{tmp_path / 'tether.db'}", env={
        "TETHER_OTLP_EXPORT__ENDPOINT": receiver.url, "TETHER_OTLP_EXPORT__INTERVAL_S": "0.2",
        "TETHER_OTLP_EXPORT__MAX_BACKOFF_S": "0.5"})  # fmt: skip
    yield env
    stop_env(env)


def test_serve_ships_ingested_and_gateway_spans_across_an_outage(
    served: LLMEnv, receiver: Receiver
) -> None:
    env = served
    with httpx.Client(timeout=30) as client:
        r = client.post(f"{env.llm_url}/chat/completions",
                        headers={"authorization": f"Bearer {env.keys['capped']}",
                                 "x-tether-run-id": new_run_id()},
                        json={"model": "mock-small", "max_tokens": 10,
                              "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert r.status_code == 200
        ingest = {"authorization": f"Bearer {env.keys['ingest-only']}"}
        # the receiver is down: ingest is acknowledged regardless
        assert client.post(f"{env.server.url}/v1/traces", json=otlp_body(),
                           headers=ingest).status_code == 200  # fmt: skip
        receiver.start()
        assert client.post(f"{env.server.url}/v1/traces", json=otlp_body(),
                           headers=ingest).status_code == 200  # fmt: skip

    def stored() -> set[tuple[str, str]]:
        with env.engine.connect() as conn:
            return {(t, s) for t, s in conn.execute(select(spans.c.trace_id, spans.c.span_id))}

    expected = poll(lambda: (s := stored()) and len(s) >= 5 and s, timeout=15)
    poll(lambda: set(receiver.keys()) >= expected, timeout=30)
    assert len(receiver.keys()) == len(set(receiver.keys()))  # exactly once
    kinds = {s["attributes"]["tether.span_kind"] for s in receiver.spans}
    assert {"llm", "agent"} <= kinds
    gateway = next(s for s in receiver.spans if s["attributes"]["tether.span_kind"] == "llm"
                   and s["attributes"].get("tether.agent") == "capped")  # fmt: skip
    assert gateway["attributes"]["gen_ai.request.model"] == "mock-small"
