"""When tether is down or refuses spans, agent code is unaffected: drops are bounded and counted."""

from __future__ import annotations

import tether
from tests.conftest import free_port
from tests.sdk.conftest import FakeTether
from tether.sdk import _config
from tether.sdk._exporter import CountingBatchSpanProcessor


@tether.tool
def step(i: int) -> int:
    return i * 2


def test_tether_down_agent_unaffected_drops_counted_and_bounded() -> None:
    tether.init(
        f"http://127.0.0.1:{free_port()}", max_queue=64, export_timeout_s=1, schedule_delay_ms=10
    )
    processor = _config.active().processor
    assert isinstance(processor, CountingBatchSpanProcessor)
    high_water = 0
    results = []
    for i in range(1500):
        with tether.run(agent="loop", task_id=f"T-{i}") as run:
            results.append(step(i))
            run.feedback(thumbs=1)
        high_water = max(high_water, processor.pending())
    assert results == [i * 2 for i in range(1500)]
    assert high_water <= 64
    tether.shutdown()
    stats = tether.sdk_stats()
    assert stats["exported"] == 0
    assert stats["dropped"] == 3000  # every span accounted for: queue overflow or failed export
    assert stats["failed_exports"] >= 1


def test_rejected_batches_are_counted_not_raised(sdk: FakeTether) -> None:
    sdk.traces_status = 500
    with tether.run(agent="triage"):
        step(1)
    assert tether.flush() is True
    stats = tether.sdk_stats()
    assert stats == {"exported": 0, "dropped": 2, "failed_exports": 1}
    # tether is backed off: the next batch is dropped without a request
    with tether.run(agent="triage"):
        pass
    tether.flush()
    assert tether.sdk_stats()["dropped"] == 3
    assert len(sdk.auth) == 1


def test_flush_and_shutdown_without_init_are_no_ops() -> None:
    assert tether.flush() is True
    tether.shutdown()


def test_a_batch_over_the_body_limit_is_split_not_lost(sdk: FakeTether) -> None:
    sdk.max_body = 30_000
    with tether.run(agent="big"):
        for i in range(8):
            step(i)
            tether.record_llm(model="gpt-4o", input="x" * 9_000, output="y")
    assert tether.flush()
    assert len(sdk.spans) == 17
    assert tether.sdk_stats()["exported"] == 17
    assert tether.sdk_stats()["dropped"] == 0


def test_a_single_span_over_the_limit_is_dropped_alone(sdk: FakeTether) -> None:
    sdk.max_body = 5_000
    with tether.run(agent="big"):
        step(1)
        tether.record_llm(model="gpt-4o", input="x" * 9_000, output="y")
    assert tether.flush()
    assert sorted(s["name"] for s in sdk.spans) == ["big", "step"]
    assert tether.sdk_stats() == {"exported": 2, "dropped": 1, "failed_exports": 1}
