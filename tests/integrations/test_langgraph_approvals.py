"""Interrupts are tether approvals (SQLite and PostgreSQL, a running tether): the run waits in
`awaiting_approval`, a decision through the API resumes the graph with Command(resume=...),
two parallel interrupts and an interrupt inside a loop each get their own approval, and a
side-effecting tool behind an interrupt runs once however often the node is replayed."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from tests.integrations.conftest import Tether
from tether.integrations.langgraph import TetherSaver, idempotent, invoke, resume_requested

EFFECTS: Counter[str] = Counter()


class Mail(TypedDict, total=False):
    to: str
    sent: str
    charged: str
    answers: list[str]


def mail_graph(saver: TetherSaver) -> Any:
    @idempotent(saver, name="billing.charge")
    def charge(to: str) -> str:
        EFFECTS[f"charge:{to}"] += 1
        return f"charged {to}"

    @idempotent(saver, name="mail.send")
    def send(to: str) -> str:
        EFFECTS[f"send:{to}"] += 1
        return f"sent to {to}"

    def send_email(s: Mail) -> dict[str, Any]:
        charged = charge(s["to"])  # before the pause: replayed when the node resumes
        decision = interrupt({"action": "send_email", "to": s["to"]})
        if not decision["approved"]:
            return {"charged": charged, "sent": f"not sent: {decision['reason']}"}
        return {"charged": charged, "sent": send(s["to"])}

    b = StateGraph(Mail)
    b.add_node("send_email", send_email)
    b.add_edge(START, "send_email")
    b.add_edge("send_email", END)
    return b.compile(checkpointer=saver)


def _pending(api: Tether, run_id: str, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        items = api.admin.get("/approvals", params={"run_id": run_id, "status": "pending"}).json()
        if len(items["items"]) >= n or time.monotonic() > deadline:
            return list(items["items"])
        time.sleep(0.05)


def test_an_interrupt_waits_as_an_approval_and_resumes_once_approved(tether_api: Tether) -> None:
    saver = TetherSaver(tether_api.url, api_key=tether_api.agent_key)
    graph = mail_graph(saver)
    to = f"{uuid.uuid4().hex[:8]}@example.com"
    config = {"configurable": {"thread_id": f"mail-{to}"}}

    paused = invoke(graph, {"to": to}, config, wait_s=0)
    assert paused.status == "awaiting_approval" and len(paused.pending) == 1
    run = tether_api.admin.get(f"/runs/{paused.run_id}").json()
    assert run["status"] == "awaiting_approval"
    approval = tether_api.admin.get(f"/approvals/{paused.pending[0]}").json()
    assert approval["tool"] == "langgraph.interrupt.send_email"
    assert approval["arguments"] == {"action": "send_email", "to": to}
    assert EFFECTS[f"charge:{to}"] == 1 and EFFECTS[f"send:{to}"] == 0

    # the agent waits; a person approves through the API; the graph resumes and finishes
    done: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: done.update(o=invoke(graph, None, config, wait_s=60)))
    waiter.start()
    r = tether_api.admin.post(f"/approvals/{paused.pending[0]}/approve", json={"reason": "ok"})
    assert r.status_code == 200, r.text
    waiter.join(60)
    outcome = done["o"]
    assert outcome.status == "done"
    assert (
        outcome.result["sent"] == f"sent to {to}" and outcome.result["charged"] == f"charged {to}"
    )
    # charged before the pause, replayed on resume: still once; sent once
    assert EFFECTS[f"charge:{to}"] == 1 and EFFECTS[f"send:{to}"] == 1
    assert tether_api.admin.get(f"/runs/{paused.run_id}").json()["status"] == "succeeded"
    timeline = tether_api.admin.get(f"/runs/{paused.run_id}/checkpoints").json()["items"]
    assert any(c["interrupts"] for c in timeline)

    # a resume from the checkpoint before the send replays the step: nothing is sent again
    before_send = next(c for c in timeline if c["interrupts"])["checkpoint_id"]
    r = tether_api.admin.post(f"/runs/{paused.run_id}/resume",
                              json={"checkpoint_id": before_send})  # fmt: skip
    assert r.status_code == 202, r.text
    replayed = resume_requested(graph, wait_s=0)
    assert [(o.run_id, o.status) for o in replayed] == [(paused.run_id, "awaiting_approval")]
    # the replay forked the thread (its steps numbered one higher) and asks again; approved,
    # the charge before the pause and the email behind it still ran once each
    again = replayed[0].pending
    assert len(again) == 1 and again[0] != paused.pending[0]
    tether_api.admin.post(f"/approvals/{again[0]}/approve", json={"reason": "again"})
    assert invoke(graph, None, config, wait_s=10).status == "done"
    assert EFFECTS[f"send:{to}"] == 1 and EFFECTS[f"charge:{to}"] == 1


def test_a_denied_interrupt_resumes_with_the_denial(tether_api: Tether) -> None:
    saver = TetherSaver(tether_api.url, api_key=tether_api.agent_key)
    graph = mail_graph(saver)
    to = f"{uuid.uuid4().hex[:8]}@example.com"
    config = {"configurable": {"thread_id": f"mail-{to}"}}
    paused = invoke(graph, {"to": to}, config, wait_s=0)
    r = tether_api.admin.post(f"/approvals/{paused.pending[0]}/deny",
                              json={"reason": "wrong customer"})  # fmt: skip
    assert r.status_code == 200
    outcome = invoke(graph, None, config, wait_s=10)
    assert outcome.status == "done"
    assert outcome.result["sent"] == "not sent: wrong customer"
    assert EFFECTS[f"send:{to}"] == 0


class Pair(TypedDict, total=False):
    left: str
    right: str


def test_two_parallel_interrupts_are_two_approvals(tether_api: Tether) -> None:
    saver = TetherSaver(tether_api.url, api_key=tether_api.agent_key)

    def ask(side: str) -> Any:
        def node(s: Pair) -> dict[str, Any]:
            d = interrupt({"side": side})
            return {side: "yes" if d["approved"] else "no"}

        return node

    b = StateGraph(Pair)
    b.add_node("left", ask("left"))
    b.add_node("right", ask("right"))
    b.add_edge(START, "left")
    b.add_edge(START, "right")
    b.add_edge("left", END)
    b.add_edge("right", END)
    graph = b.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": f"pair-{uuid.uuid4().hex[:8]}"}}

    paused = invoke(graph, {}, config, wait_s=0)
    assert paused.status == "awaiting_approval" and len(paused.pending) == 2
    held = {a["arguments"]["side"]: a["id"] for a in _pending(tether_api, paused.run_id, 2)}
    assert set(held) == {"left", "right"}
    tether_api.admin.post(f"/approvals/{held['left']}/approve")
    # one decided, one pending: the agent keeps waiting
    assert invoke(graph, None, config, wait_s=0).status == "awaiting_approval"
    tether_api.admin.post(f"/approvals/{held['right']}/deny")
    outcome = invoke(graph, None, config, wait_s=10)
    assert outcome.status == "done" and outcome.result == {"left": "yes", "right": "no"}


class Loop(TypedDict, total=False):
    answers: list[str]


def test_an_interrupt_inside_a_loop_asks_each_round(tether_api: Tether) -> None:
    saver = TetherSaver(tether_api.url, api_key=tether_api.agent_key)

    def ask(s: Loop) -> dict[str, Any]:
        n = len(s.get("answers", []))
        d = interrupt({"round": n + 1})
        return {"answers": [*s.get("answers", []), f"{n + 1}:{d['approved']}"]}

    b = StateGraph(Loop)
    b.add_node("ask", ask)
    b.add_edge(START, "ask")
    b.add_conditional_edges("ask", lambda s: "ask" if len(s["answers"]) < 3 else END)
    graph = b.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": f"loop-{uuid.uuid4().hex[:8]}"}}

    done: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: done.update(o=invoke(graph, {}, config, wait_s=90)))
    waiter.start()
    decided: list[str] = []
    run_id = None
    for round_no in (1, 2, 3):
        deadline = time.monotonic() + 60
        while run_id is None and time.monotonic() < deadline:
            run_id = saver._runs.get(config["configurable"]["thread_id"])
            time.sleep(0.05)
        assert run_id is not None
        pending = _pending(tether_api, run_id, 1)
        assert [a["arguments"] for a in pending] == [{"round": round_no}]
        verb = "approve" if round_no != 2 else "deny"
        tether_api.admin.post(f"/approvals/{pending[0]['id']}/{verb}")
        decided.append(pending[0]["id"])
    waiter.join(90)
    assert done["o"].status == "done"
    assert done["o"].result["answers"] == ["1:True", "2:False", "3:True"]
    assert len(set(decided)) == 3
