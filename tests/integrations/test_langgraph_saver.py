"""TetherSaver under real LangGraph graphs against a running tether (SQLite and PostgreSQL): the
thread becomes a run with a timeline, agents cannot read each other's threads, unknown types are
refused on load, and pruning keeps resumes working."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

from tests.integrations.conftest import Tether
from tether.core.errors import PermissionDeniedError
from tether.integrations.langgraph import TetherSaver


class Steps(TypedDict):
    log: Annotated[list[str], operator.add]
    count: int


def counting_graph(saver: TetherSaver, rounds: int) -> Any:
    def plan(s: Steps) -> dict[str, Any]:
        return {"log": ["plan"], "count": 0}

    def work(s: Steps) -> dict[str, Any]:
        return {"log": [f"work {s['count'] + 1}"], "count": s["count"] + 1}

    b = StateGraph(Steps)
    b.add_node("plan", plan)
    b.add_node("work", work)
    b.add_edge(START, "plan")
    b.add_edge("plan", "work")
    b.add_conditional_edges("work", lambda s: "work" if s["count"] < rounds else END)
    return b.compile(checkpointer=saver)


def test_a_thread_is_a_run_with_a_timeline(tether_api: Tether) -> None:
    saver = TetherSaver(tether_api.url, api_key=tether_api.agent_key)
    graph = counting_graph(saver, rounds=2)
    config = {"configurable": {"thread_id": "task-abc-001", "user": "alice", "version": "v3"}}
    out = graph.invoke({"log": [], "count": 0}, config)
    assert out == {"log": ["plan", "work 1", "work 2"], "count": 2}

    run_id = saver.run_id(config)
    assert run_id is not None and run_id.startswith("run_")
    run = tether_api.admin.get(f"/runs/{run_id}").json()
    assert (run["agent"], run["task_id"], run["user"], run["version"]) == (
        "lg-agent", "task-abc-001", "alice", "v3",
    )  # fmt: skip

    items = tether_api.admin.get(f"/runs/{run_id}/checkpoints").json()["items"]
    assert [i["step"] for i in items] == [-1, 0, 1, 2, 3]
    assert [i["nodes"] for i in items] == [[], [], ["plan"], ["work"], ["work"]]
    last = items[-1]
    assert last["state"] == {"count": 2, "log": ["plan", "work 1", "work 2"]}
    assert last["diff"]["changed"] == {
        "count": {"before": 1, "after": 2},
        "log": {"before": ["plan", "work 1"], "after": ["plan", "work 1", "work 2"]},
    }
    # the writes pending on the step-1 checkpoint are what `work` wrote next
    assert {"channel": "count", "value": 1} in [
        {k: w[k] for k in ("channel", "value")} for w in items[2]["pending_writes"]
    ]
    # LangGraph reads back what it stored: the state and the history
    assert graph.get_state(config).values["count"] == 2
    assert len(list(graph.get_state_history(config))) == 5


def test_another_agent_cannot_read_or_write_the_thread(tether_api: Tether) -> None:
    mine = TetherSaver(tether_api.url, api_key=tether_api.agent_key)
    counting_graph(mine, rounds=1).invoke({"log": [], "count": 0},
                                          {"configurable": {"thread_id": "t-private"}})  # fmt: skip
    theirs = TetherSaver(tether_api.url, api_key=tether_api.key("other-agent"))
    config = {"configurable": {"thread_id": "t-private"}}
    assert theirs.get_tuple(config) is None
    assert list(theirs.list(None)) == []
    with pytest.raises(PermissionDeniedError, match="belongs to agent lg-agent"):
        counting_graph(theirs, rounds=1).invoke({"log": [], "count": 0}, config)
    theirs.delete_thread("t-private")  # not theirs: nothing happens
    assert mine.get_tuple(config) is not None


@dataclass
class Payload:
    command: str


def test_types_outside_the_allowlist_are_refused_on_load(tether_api: Tether) -> None:
    key = tether_api.agent_key
    config = {"configurable": {"thread_id": "t-types", "checkpoint_ns": ""}}
    writer = TetherSaver(tether_api.url, api_key=key, allowed_types=[(__name__, "Payload")])
    cp = {"v": 1, "id": "1ef0000000000000000000000000000a", "ts": "2026-12-01T00:00:00+00:00",
          "channel_values": {"x": Payload("rm -rf /")}, "channel_versions": {"x": 1},
          "versions_seen": {}, "pending_sends": [], "updated_channels": None}  # fmt: skip
    writer.put(config, cp, {"source": "loop", "step": 0, "parents": {}}, {"x": 1})  # type: ignore[arg-type]

    strict = TetherSaver(tether_api.url, api_key=key)
    loaded = strict.get_tuple(config)
    assert loaded is not None
    assert loaded.checkpoint["channel_values"]["x"] == {"command": "rm -rf /"}
    assert not isinstance(loaded.checkpoint["channel_values"]["x"], Payload)
    allowed = writer.get_tuple(config)
    assert allowed is not None and allowed.checkpoint["channel_values"]["x"] == Payload("rm -rf /")


def test_keep_latest_prunes_and_the_thread_still_resumes(tether_api: Tether) -> None:
    saver = TetherSaver(tether_api.url, api_key=tether_api.agent_key, keep_latest=2)
    config = {"configurable": {"thread_id": "t-prune"}}
    counting_graph(saver, rounds=4).invoke({"log": [], "count": 0}, config)
    assert len(list(saver.list(config))) == 2
    # a new input on the same thread continues from the newest checkpoint
    out = counting_graph(saver, rounds=6).invoke({"log": ["again"]}, config)
    assert out["count"] == 6 and out["log"][:6] == ["plan", "work 1", "work 2", "work 3",
                                                    "work 4", "again"]  # fmt: skip
    assert len(list(saver.list(config))) == 2
