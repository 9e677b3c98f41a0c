"""tether.testing: what users get for their own agent tests (capture, the pytest fixture)."""

from __future__ import annotations

import pytest

import tether
from tether.testing import Capture, capture


@tether.tool(name="crm.lookup")
def lookup(email: str) -> str:
    return "gold"


def triage(ticket: str) -> str:
    """A tiny agent, as a user would write one."""
    with tether.run(agent="triage", task_id="T-1", user="alice", input=ticket) as run:
        tier = lookup("a@b.c")
        tether.record_llm(model="gpt-4o-mini", input=ticket, output="billing", input_tokens=812,
                          output_tokens=3)  # fmt: skip
        run.set_output(f"billing ({tier})")
    run.feedback(thumbs=1)
    return run.id


def test_capture_exposes_runs_tools_llm_calls_and_feedback() -> None:
    with capture() as cap:
        run_id = triage("I was charged twice")
    run = cap.run("triage")
    assert run.run_id == run_id and run.succeeded
    assert (run.task_id, run.user, run.input, run.output) == (
        "T-1", "alice", "I was charged twice", "billing (gold)")  # fmt: skip
    assert [t.name for t in cap.tool_calls] == ["crm.lookup"]
    assert cap.llm_calls[0].input_tokens == 812
    assert cap.feedback == [{"run_id": run_id, "kind": "thumbs", "value": 1, "user": "alice"}]
    cap.clear()
    assert cap.runs == [] and cap.feedback == []


def test_nothing_leaves_the_process_and_the_previous_sdk_comes_back() -> None:
    tether.init("http://127.0.0.1:9", schedule_delay_ms=10)  # nothing listens on port 9
    with capture():
        triage("x")
    assert tether.sdk_stats() == {"exported": 0, "dropped": 0, "failed_exports": 0}


def test_run_helper_names_the_problem() -> None:
    with capture() as cap:
        triage("a")
        triage("b")
    with pytest.raises(AssertionError, match="expected one run of triage, got 2"):
        cap.run("triage")


def test_the_pytest_fixture(tether_capture: Capture) -> None:
    """tests/sdk/conftest.py imports the fixture, as a user's conftest.py would."""
    triage("from the fixture")
    assert tether_capture.run().input == "from the fixture"
