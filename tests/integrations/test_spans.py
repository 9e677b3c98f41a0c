"""The integrations' SpanTree (tether.integrations._spans) with the SDK's in-memory capture:
events delivered out of order (CrewAI hands them to a thread pool) still make one closed span
with the events' own times, and tools that go through tether's MCP gateway are context spans,
so the run's tool calls are the gateway's alone."""

from __future__ import annotations

from tether.integrations._spans import SpanTree
from tether.testing import capture

T0 = 1_700_000_000_000_000_000  # ns


def test_an_end_delivered_before_its_start_closes_the_span_with_the_events_times() -> None:
    with capture() as cap:
        tree = SpanTree("crew", task_id="T-1")
        tree.root(start_time=T0)
        tree.end("tool-1", output="forty-two", end_time=T0 + 5_000_000, early=True)  # arrives first
        tree.start("tool-1", None, "lookup", "tool", input={"q": "x"}, start_time=T0 + 1_000_000)
        tree.end("never-started", output="lost", early=False)  # not kept: no span
        tree.finish(output="done", end_time=T0 + 9_000_000)
    tool = next(s for s in cap.spans if s.name == "lookup")
    assert (tool.kind, tool.output, tool.input, tool.status) == (
        "tool",
        "forty-two",
        {"q": "x"},
        "ok",
    )
    assert tool.latency_ms == 4.0
    assert [s.name for s in cap.spans] == ["lookup", "crew"]  # nothing left open, nothing extra
    (run,) = cap.runs
    assert (run.task_id, run.output, run.latency_ms) == ("T-1", "done", 9.0)
    assert tool.run_id == run.run_id == tree.run_id


def test_an_end_after_the_run_finished_is_dropped() -> None:
    with capture() as cap:
        tree = SpanTree("crew")
        tree.root()
        tree.finish()
        tree.end("late", output="x", early=True)
        assert not tree.is_open("late")
    assert [s.name for s in cap.spans] == ["crew"]


def test_tools_through_the_gateway_are_context_not_tool_calls() -> None:
    with capture() as cap:
        tree = SpanTree("crew", tools_via_gateway=True)
        tree.start("t", None, "send_email", "tool", attributes={"tool.name": "send_email"})
        tree.end("t", output="sent")
        plain = SpanTree("crew")
        plain.start("t", None, "send_email", "tool", attributes={"tool.name": "send_email"})
        plain.end("t", output="sent")
        tree.finish()
        plain.finish()
    by_run = {(s.run_id, s.name): s for s in cap.spans}
    gw = by_run[(tree.run_id, "tool send_email")]
    assert gw.kind == "chain" and gw.attributes["tether.framework.tool"] == "send_email"
    assert "tool.name" not in gw.attributes
    assert by_run[(plain.run_id, "send_email")].kind == "tool"
    assert [s.run_id for s in cap.tool_calls] == [plain.run_id]
