"""tether.init / tether.run against a real HTTP server speaking tether's contract."""

from __future__ import annotations

import pytest
from opentelemetry import trace

import tether
from tests.sdk.conftest import FakeTether
from tether.sdk import _config

OK, ERROR = 1, 2  # OTLP status codes


def test_run_exports_root_agent_span_with_attribution(sdk: FakeTether) -> None:
    with tether.run(
        agent="triage", task_id="T-1", user="alice", version="v3", input={"ticket": "refund please"}
    ) as run:
        run.set_output("refunded")
    assert tether.flush()
    span = sdk.span("triage")
    assert run.id == "run_" + span["trace_id"] == "run_" + run.trace_id
    assert span["parent_id"] is None
    assert span["status"] == OK
    attrs = span["attributes"]
    assert attrs["openinference.span.kind"] == "AGENT"
    assert (
        attrs["tether.agent"],
        attrs["tether.task_id"],
        attrs["tether.user"],
        attrs["tether.agent_version"],
    ) == ("triage", "T-1", "alice", "v3")
    assert attrs["input.value"] == '{"ticket": "refund please"}'
    assert attrs["input.mime_type"] == "application/json"
    assert attrs["output.value"] == "refunded"
    assert span["resource"]["service.name"] == "sdk-tests"
    assert sdk.auth == ["Bearer tk_test"]
    assert tether.sdk_stats() == {"exported": 1, "dropped": 0, "failed_exports": 0}


def test_exception_marks_run_failed_and_is_reraised(sdk: FakeTether) -> None:
    with pytest.raises(KeyError, match="missing"), tether.run(agent="triage") as run:
        raise KeyError("missing")
    tether.flush()
    span = sdk.span("triage")
    assert span["status"] == ERROR
    assert span["error"] == "KeyError: 'missing'"
    assert span["attributes"]["error.type"] == "KeyError"
    assert run.status == "failed" and run.error == "KeyError: 'missing'"


async def test_async_run_and_current_run(sdk: FakeTether) -> None:
    assert tether.current_run() is None
    async with tether.run(agent="research", task_id="T-2") as run:
        assert tether.current_run() is run
        run.set_output({"answer": 42})
    assert tether.current_run() is None
    tether.flush()
    span = sdk.span("research")
    assert span["attributes"]["output.value"] == '{"answer": 42}'
    assert span["status"] == OK


def test_nested_run_is_a_run_of_its_own(sdk: FakeTether) -> None:
    with tether.run(agent="planner") as outer, tether.run(agent="coder") as inner:
        pass
    tether.flush()
    coder = sdk.span("coder")
    assert inner.trace_id != outer.trace_id
    assert coder["parent_id"] is None
    assert coder["attributes"]["tether.parent_run_id"] == outer.id


def test_explicit_run_id(sdk: FakeTether) -> None:
    with tether.run(agent="triage", run_id="run_fixed-1") as run:
        pass
    tether.flush()
    assert run.id == "run_fixed-1"
    assert sdk.span("triage")["attributes"]["tether.run_id"] == "run_fixed-1"


def test_feedback_inside_the_run_is_sent_once_the_run_is_stored(sdk: FakeTether) -> None:
    with tether.run(agent="triage", user="alice") as run:
        run.feedback(thumbs=1, comment="fast")  # the run is not stored yet: deferred
        assert sdk.feedback == []
    run.score("correctness", 0.75, comment="close")
    run.feedback(thumbs=-1, score=0.2, user="bob")
    run.feedback(comment="needs a citation")
    assert tether.flush()
    assert sdk.feedback == [
        {"run_id": run.id, "kind": "thumbs", "value": 1, "comment": "fast", "user": "alice"},
        {"run_id": run.id, "kind": "thumbs", "value": -1, "user": "bob"},
        {"run_id": run.id, "kind": "score", "value": 0.2, "user": "bob"},
        {"run_id": run.id, "kind": "comment", "comment": "needs a citation", "user": "alice"},
    ]
    assert sdk.scores == [
        {
            "run_id": run.id,
            "name": "correctness",
            "value": 0.75,
            "comment": "close",
            "source": "sdk",
        }
    ]


def test_feedback_rejects_bad_arguments(sdk: FakeTether) -> None:
    with tether.run(agent="triage") as run:
        pass
    with pytest.raises(ValueError, match="thumbs"):
        run.feedback(thumbs=5)
    with pytest.raises(ValueError, match="needs"):
        run.feedback()
    with pytest.raises(RuntimeError, match="not started"):
        tether.run(agent="x").feedback(thumbs=1)


def test_init_is_idempotent_and_leaves_the_global_provider_alone(fake_tether: FakeTether) -> None:
    before = trace.get_tracer_provider()
    tether.init(fake_tether.url)
    first = _config._sdk
    tether.init(fake_tether.url)
    assert _config._sdk is first
    assert trace.get_tracer_provider() is before
    tether.init(fake_tether.url, service_name="other")
    assert _config._sdk is not first


def test_run_without_init_configures_itself(
    fake_tether: FakeTether, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_URL", fake_tether.url)
    monkeypatch.setenv("TETHER_API_KEY", "tk_env")
    with tether.run(agent="auto"):
        pass
    tether.flush()
    assert fake_tether.span("auto")["attributes"]["tether.agent"] == "auto"
    assert fake_tether.auth == ["Bearer tk_env"]
