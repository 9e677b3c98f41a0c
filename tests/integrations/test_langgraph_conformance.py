"""LangGraph's own checkpointer conformance suite (langgraph-checkpoint-conformance, from PyPI)
against TetherSaver and a running tether, on SQLite and PostgreSQL: every base and extended
capability (put, put_writes, get_tuple, list, delete_thread, delete_for_runs, copy_thread,
prune)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from tests.integrations.conftest import Tether
from tether.integrations.langgraph import TetherSaver


async def test_tether_saver_passes_the_conformance_suite(tether_api: Tether) -> None:
    @checkpointer_test(name="TetherSaver")
    async def tether_saver() -> AsyncIterator[TetherSaver]:
        saver = TetherSaver(tether_api.url, api_key=tether_api.agent_key, timeout_s=60)
        yield saver
        await saver.aclose()
        saver.close()

    report = await validate(tether_saver)
    report.print_report()
    failures = {cap: r.failures for cap, r in report.results.items() if not r.passed}
    assert not failures, failures
    assert {cap for cap, r in report.results.items() if r.detected} == {
        c.value for c in ALL_CAPABILITIES
    }
    assert sum(r.tests_passed for r in report.results.values()) >= 80
