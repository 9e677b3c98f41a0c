"""`/api/v1/approvals`: list, approve, deny (admin only), long-poll wait woken by a decision made
elsewhere, timeout with the default, 404/409 on bad ids and double decisions."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.server.api_helpers import Api, make_api
from tether.config import Settings
from tether.store import approvals


@pytest.fixture
def api(settings: Settings, db: Engine) -> Api:
    return make_api(settings, db)


def hold(api: Api, agent: str = "triage", timeout_s: float = 600) -> approvals.Approval:
    return approvals.create(api.db, tool="mail.send", arguments={"to": "x@y.z"}, run_id="run_a",
                            agent=agent, rule="r", reason="needs a person", timeout_s=timeout_s,
                            now=datetime.now(UTC))  # fmt: skip


def test_list_approve_and_deny(api: Api) -> None:
    a, b = hold(api), hold(api, agent="other")
    listed = api.client.get("/api/v1/approvals?status=pending", headers=api.read).json()
    assert {x["id"] for x in listed["items"]} == {a.id, b.id} and listed["next_cursor"] is None
    mine = api.client.get("/api/v1/approvals", headers=api.triage).json()["items"]
    assert [x["id"] for x in mine] == [a.id]  # agent keys see their own agent's holds
    assert api.client.get(f"/api/v1/approvals/{b.id}", headers=api.triage).status_code == 404
    r = api.client.post(f"/api/v1/approvals/{a.id}/approve", json={"reason": "ok"},
                        headers=api.triage)  # fmt: skip
    assert r.status_code == 403
    r = api.client.post(f"/api/v1/approvals/{a.id}/approve", json={"reason": "ok"},
                        headers=api.admin)  # fmt: skip
    assert r.status_code == 200 and r.json()["status"] == "approved"
    assert r.json()["decided_by"].startswith("key:")
    again = api.client.post(f"/api/v1/approvals/{a.id}/deny", headers=api.admin)
    assert again.status_code == 409 and "already approved" in again.json()["error"]["message"]
    r = api.client.post(f"/api/v1/approvals/{b.id}/deny", headers=api.admin)
    assert r.status_code == 200 and r.json()["status"] == "denied"
    assert api.client.post("/api/v1/approvals/apr_nope/deny", headers=api.admin).status_code == 404
    bad = api.client.get("/api/v1/approvals?status=maybe", headers=api.read)
    assert bad.status_code == 400


def test_wait_is_woken_by_a_decision_from_elsewhere(api: Api) -> None:
    """A decision written straight to the store (as another process would) wakes the waiter
    long before its timeout: the answer is the decision, not "pending"."""
    a = hold(api)
    waiting = threading.Event()
    answer: dict[str, Any] = {}

    def wait() -> None:
        waiting.set()
        r = api.client.get(f"/api/v1/approvals/{a.id}/wait?timeout_s=60", headers=api.triage)
        answer.update(r.json(), returned_at=time.monotonic())

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert waiting.wait(30)
    # the decision comes once the wait has been asked for (if it lands before the server starts
    # waiting, the wait answers at once: the same observable outcome)
    approvals.decide(api.db, a.id, approve=False, actor="cli", reason="nope",
                     now=datetime.now(UTC))  # fmt: skip
    decided_at = time.monotonic()
    waiter.join(90)
    assert not waiter.is_alive()
    returned_at = answer.pop("returned_at")
    assert answer == {"id": a.id, "status": "denied", "reason": "nope", "decided_by": "cli"}
    # woken by the store poll (50 ms), well inside the 60 s timeout on however busy a machine
    assert returned_at - decided_at < 30


def test_wait_returns_pending_or_applies_the_default(api: Api) -> None:
    a = hold(api)
    r = api.client.get(f"/api/v1/approvals/{a.id}/wait?timeout_s=0.1", headers=api.triage)
    assert r.json()["status"] == "pending"
    short = hold(api, timeout_s=0.2)
    r = api.client.get(f"/api/v1/approvals/{short.id}/wait?timeout_s=5", headers=api.triage)
    assert r.json()["status"] == "expired" and r.json()["decided_by"] == "timeout"
    r = api.client.get(f"/api/v1/approvals/{a.id}/wait?timeout_s=999", headers=api.triage)
    assert r.status_code == 400


def test_pages_with_a_cursor(api: Api) -> None:
    ids = {hold(api).id for _ in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/api/v1/approvals", params=params, headers=api.read).json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and set(seen) == ids
    bad = api.client.get("/api/v1/approvals?cursor=nonsense", headers=api.read)
    assert bad.status_code == 400
